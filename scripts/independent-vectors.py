#!/usr/bin/env python3
"""Writes a second protocol vectors file computed from DESIGN.md's formulas in
plain Python (hmac, hashlib), independently of the Rust code: another code
key, 7- and 8-digit codes, non-ASCII parcel ids, tags of every width. The Rust
vectors test then runs on it through DOORCODE_VECTORS. The signed manifest is
carried over from the shared file (no Ed25519 in Python's standard library).

usage: independent-vectors.py SHARED_VECTORS OUT"""
import base64
import hashlib
import hmac
import json
import random
import sys

shared, out = sys.argv[1], sys.argv[2]
rng = random.Random(20261123)
v = json.load(open(shared, encoding="utf-8"))
key = bytes(rng.randrange(256) for _ in range(32))
v["code_key_hex"] = key.hex()


def code(pid, date, attempt, digits):
    msg = b"doorcode:code:v1\x00" + pid.encode() + b"\x00" + date.encode() + b"\x00" + str(attempt).encode()
    mac = hmac.new(key, msg, hashlib.sha256).digest()
    off = mac[31] & 0x0F
    return str((int.from_bytes(mac[off:off + 4], "big") & 0x7FFFFFFF) % 10**digits).zfill(digits)


def tag(salt, pid, date, c, bits):
    h = hashlib.sha256(b"doorcode:tag:v1\x00" + salt + pid.encode() + b"\x00" + date.encode() + b"\x00" + c.encode()).digest()
    return int.from_bytes(h[:4], "big") >> (32 - bits)


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def day():
    return "20%02d-%02d-%02d" % (rng.randint(26, 40), rng.randint(1, 12), rng.randint(1, 28))


v["codes"] = []
for i in range(40):
    pid = rng.choice(["Z-%d" % i, "ÅÄÖ-ß-%d" % i, "P" * (i + 1), "TBA%012d" % rng.randrange(10**12)])
    date, attempt, digits = day(), rng.randint(1, 12), rng.choice([6, 7, 8])
    v["codes"].append(dict(parcel_id=pid, delivery_date=date, attempt=attempt, digits=digits, code=code(pid, date, attempt, digits)))
v["tags"] = []
for i in range(40):
    salt = bytes(rng.randrange(256) for _ in range(16))
    pid, date, c, bits = "T-%d" % i, day(), str(rng.randrange(10**6)).zfill(6), (i % 32) + 1
    v["tags"].append(dict(parcel_id=pid, delivery_date=date, code=c, salt=b64(salt), bits=bits, tag=tag(salt, pid, date, c, bits)))
# The manifest's code_for_ entries were derived with the shared key: recompute with this one is
# impossible without re-signing, so they go; the envelope checks stay.
v["manifest"] = {k: x for k, x in v["manifest"].items() if not k.startswith("code_for_")}
v["spoken"] = [
    {"input": "nine, nine, nine. eight eight eight", "code": "999888"},
    {"input": "oh oh seven double four one", "code": "007441"},
    {"input": "5-5-5 1-2-1-2", "code": "5551212"},
    {"input": "triple zero, triple one, two", "code": "0001112"},
]
with open(out, "w", encoding="utf-8") as f:
    json.dump(v, f, ensure_ascii=False, indent=1)
print(f"wrote {out}: {len(v['codes'])} codes, {len(v['tags'])} tags, {len(v['spoken'])} spoken")
