#!/usr/bin/env python3
"""Writes the committed seed corpora under fuzz/corpus/<target>/ from the
protocol vectors and real requests. Run from the repository root:
    python3 fuzz/make-seeds.py [path/to/protocol-v1.json]
The seeds are small; what a fuzz run finds stays in its temporary copy."""
import base64, json, os, sys

root = os.path.dirname(os.path.abspath(__file__))
vec_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "../../shared/vectors/protocol-v1.json")
vec = json.load(open(vec_path))


def b64d(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def write(target, name, data):
    d = os.path.join(root, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def compact(v):
    return json.dumps(v, separators=(",", ":"))


# code_input: one byte picks the expected length (1 -> 6, 2 -> 7, 3 -> 8), one
# byte how many of the next four bytes name languages (index into
# Language::ALL: 0 en, 1 es, 2 pt, 3 fr, 4 de, 5 it, 6 hi), then the text.
def code_input(name, digits, langs, text):
    picks = (list(langs) + [0, 0, 0, 0])[:4]
    write("code_input", name, bytes([digits, len(langs)] + picks) + text.encode())


for i, s in enumerate(vec["spoken"]):
    code_input(f"spoken-{i:02}", 1, [0], s["input"])
code_input("eight", 3, [], "1234 5678")
code_input("seven-words", 2, [0], "uh the code is forty two double seven one oh five")
code_input("unknown-word", 1, [0], "four two banana")
code_input("mixed", 1, [0], "12a456")
code_input("es", 1, [1, 0], "el código es cuarenta y dos, doble siete, uno cero")
code_input("pt", 1, [2], "quatro dois meia meia um zero")
code_input("fr", 1, [3], "quatre-vingt-dix-sept soixante et onze dix")
code_input("de", 1, [4], "zweiundvierzig doppel sieben zwo null")
code_input("it", 1, [5], "ventotto quarantuno doppio zero")
code_input("hi", 1, [6, 0], "char do saat saat ek shunya")
code_input("other-language", 1, [0], "cuatro dos siete siete uno cero")
code_input("hundreds", 1, [1, 4], "cuatrocientos zweihundert")

# manifest: the body (it is signed inside the target).
m_env = vec["manifest"]["envelope"]
body = json.loads(b64d(m_env["body"]))
write("manifest", "vector", compact(body))
m2 = json.loads(compact(body))
m2["revision"] = 4
m2["code_digits"] = 8
m2["stops"].append({"stop_id": "S-2", "sequence": 2, "address": "2 Example Street", "recipient": "A. Roe",
                    "parcels": [{"parcel_id": "P-1002", "requires_code": False, "attempt": 2}]})
write("manifest", "two-stops", compact(m2))
m3 = json.loads(compact(body))
m3["format"] = 2
write("manifest", "format-2", compact(m3))

# envelope: whole envelopes as JSON.
write("envelope", "vector", compact(m_env))
write("envelope", "tampered", compact(vec["manifest"]["tampered_envelope_must_fail"]))
write("envelope", "unknown-field", '{"v":1,"kid":"k-test","body":"e30","sig":"AA","x":1}')

# confirmation: bodies (signed inside the target by device "d-fuzz").
conf = {"format": 1, "confirmation_id": "6f1c2e4a-0d3b-4c1e-9a57-3f1d2b8e9c10", "device_id": "d-fuzz",
        "seq": 1, "manifest_id": "m-test-1", "revision": 3, "parcel_id": "P-1001",
        "delivery_date": "2026-11-23", "attempt": 1, "outcome": "delivered", "reason": None,
        "code": "857759", "verified": "offline", "failed_attempts": 0,
        "recorded_at": "2026-11-23T10:15:00Z", "since_sync_ms": 1000}
write("confirmation", "delivered-offline", compact(conf))
failed = dict(conf, outcome="failed", reason="customer_absent", code=None, verified="none", seq=2)
write("confirmation", "failed", compact(failed))
online = dict(conf, verified="online", code="12345678", seq=3, failed_attempts=2)
write("confirmation", "delivered-online-8", compact(online))

# server_requests: op byte, flags byte (0: right content type, shared address), body.
# The op numbers follow OPS in fuzz_targets/server_requests.rs.
dconf = dict(conf, device_id="{{DEVICE}}")
reqs = {
    "parcels": (0, compact({"parcels": [{"parcel_id": "P-2001", "recipient": {"name": "B. Poe", "email": "b@example.com", "phone": "+15550100"},
                                            "address": "3 Example Street", "value": 75.5, "currency": "USD", "requires_code": True}]})),
    "routes": (1, compact({"route_id": "R-7", "courier_id": "C-42", "delivery_date": "2026-11-23",
                           "stops": [{"stop_id": "S-1", "address": "1 Example Street", "recipient": "J. Doe", "parcel_ids": ["P-1001", "P-1002"]}]})),
    "enrollments": (2, compact({"courier_id": "C-43"})),
    "devices": (3, compact({"enrollment_code": "ABCD-EFGH-JKMN", "device_public_key": "Kay64UG8yvCyLhqU000LxzYeUm0L_hLIl5S8kyKWbdc", "device_name": "phone"})),
    "confirmations-raw": (4, compact({"confirmations": [dict(m_env, kid="{{DEVICE}}")]})),
    "confirmation-delivered": (5, compact(dconf)),
    "confirmation-failed": (5, compact(dict(failed, device_id="{{DEVICE}}"))),
    "verify-right": (6, compact({"parcel_id": "P-1001", "code": "857759"})),
    "verify-wrong": (6, compact({"parcel_id": "P-1001", "code": "000000"})),
    "reissue": (7, "P-1001"),
    "close-day": (8, "2026-11-23"),
    "manifest": (9, "date=2026-11-23"),
    "parcel": (10, "P-1001"),
    "track-json": (11, "{{TRACK}}"),
    "track-page": (12, "{{TRACK}}"),
    "board-login": (13, "token=not-the-token"),
    "board-reissue": (14, "csrf={{CSRF}}&parcel_id=P-1001&date=2026-11-23"),
    "board-enroll": (15, "csrf={{CSRF}}&courier_id=C-44"),
    "board-close": (16, "csrf={{CSRF}}&date=2026-11-24"),
    "board-logout": (17, "csrf=wrong"),
    "track-resend": (18, "t={{T}}"),
    "board": (19, "date=2026-11-23&status=scheduled&q=P-10"),
    "board-live": (20, "date=2026-11-23&done=reissued"),
}
for name, (op, body) in reqs.items():
    write("server_requests", name, bytes([op, 0]) + body.encode())
