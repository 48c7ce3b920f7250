// Browser tests: a real `doorcode serve` on a free loopback port with a
// temporary data dir, driven through its API and in headless Debian Chromium
// (playwright-core, executablePath /usr/bin/chromium).
//
// The courier's side goes through the desktop handset CLI
// (`doorcode handset ...`) when the binary has it; otherwise through the real
// device API with an Ed25519 key made by Node's crypto: enroll, fetch the
// manifest, check the code online (POST /v1/verify) and upload a signed
// confirmation.
//
// Run: node --test (from web-tests/). Env: DOORCODE_BIN (default
// ../target/debug/doorcode), CHROMIUM (default /usr/bin/chromium),
// UPDATE_SCREENSHOTS=1 to copy the screenshots into docs/screenshots/.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..');
const BIN = process.env.DOORCODE_BIN || path.join(root, 'target/debug/doorcode');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = path.join(here, 'artifacts');
const SHOTS = path.join(root, 'docs/screenshots');
const PHONE = { width: 390, height: 844 };
const DESKTOP = { width: 1280, height: 800 };

let server, base, admin, browser, tmp, day, nextDay;
const tokens = {}; // parcel id -> track token
let boardCtx, board, csrfLess;

function b64url(buf) {
  return Buffer.from(buf).toString('base64url');
}

async function api(method, p, body, token = admin) {
  const r = await fetch(base + p, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, json, text, headers: r.headers };
}

async function shot(page, name) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  if (process.env.UPDATE_SCREENSHOTS === '1') {
    fs.mkdirSync(SHOTS, { recursive: true });
    fs.copyFileSync(file, path.join(SHOTS, `${name}.png`));
  }
}

function hasHandsetCli() {
  try {
    return /\bhandset\b/.test(execFileSync(BIN, ['--help'], { encoding: 'utf8' }));
  } catch {
    return false;
  }
}

// A handset made of Node crypto and the real device API.
class ApiDevice {
  constructor() {
    const { publicKey, privateKey } = crypto.generateKeyPairSync('ed25519');
    this.privateKey = privateKey;
    this.publicKey = publicKey.export({ format: 'jwk' }).x; // raw 32 bytes, base64url
    this.seq = 0;
  }
  async enroll(code) {
    const r = await api('POST', '/v1/devices', { enrollment_code: code, device_public_key: this.publicKey, device_name: 'browser-test' }, '');
    assert.equal(r.status, 200, r.text);
    this.id = r.json.device_id;
    this.token = r.json.device_token;
  }
  async manifest() {
    const r = await api('GET', `/v1/manifest?date=${day}`, null, this.token);
    assert.equal(r.status, 200, r.text);
    return JSON.parse(Buffer.from(r.json.body, 'base64url').toString('utf8'));
  }
  async verify(parcelId, code) {
    return api('POST', '/v1/verify', { parcel_id: parcelId, code }, this.token);
  }
  async confirmDelivered(parcelId, code) {
    const m = await this.manifest();
    const parcel = m.stops.flatMap((s) => s.parcels).find((p) => p.parcel_id === parcelId);
    assert.ok(parcel, `${parcelId} on the manifest`);
    const body = Buffer.from(JSON.stringify({
      format: 1, confirmation_id: crypto.randomUUID(), device_id: this.id, seq: ++this.seq,
      manifest_id: m.manifest_id, revision: m.revision, parcel_id: parcelId, delivery_date: day,
      attempt: parcel.attempt, outcome: 'delivered', reason: null, code, verified: 'online',
      failed_attempts: 0, recorded_at: new Date().toISOString(), since_sync_ms: 1000,
    }));
    const sig = crypto.sign(null, Buffer.concat([Buffer.from('doorcode:confirmation:v1'), Buffer.from([0]), body]), this.privateKey);
    const r = await api('POST', '/v1/confirmations', { confirmations: [{ v: 1, kid: this.id, body: b64url(body), sig: b64url(sig) }] }, this.token);
    assert.equal(r.status, 200, r.text);
    return r.json.results[0];
  }
}

// The desktop handset CLI, when the binary has it.
class CliDevice {
  constructor() { this.db = path.join(tmp, 'handset.db'); }
  run(...args) {
    // Exits non-zero (and so throws) when the step fails; prints JSON.
    const out = execFileSync(BIN, ['handset', '--db', this.db, ...args], { encoding: 'utf8' }).trim();
    try { return JSON.parse(out); } catch { return out; }
  }
  async enroll(code) { this.run('enroll', '--server', base, '--code', code); }
  async deliver(parcelId, code) {
    this.run('sync', '--date', day);
    const v = this.run('verify', parcelId, code);
    this.run('sync', '--date', day);
    return v;
  }
}

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'doorcode-web-'));
  assert.ok(fs.existsSync(BIN), `${BIN} missing: cargo build -p doorcode-server --bin doorcode`);
  server = spawn(BIN, ['serve', '--data-dir', path.join(tmp, 'data'), '--listen', '127.0.0.1:0',
    '--working-days', 'mon-sun', '--time-zone', 'UTC'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const logs = [];
  server.stderr.on('data', (d) => logs.push(String(d)));
  server.logs = logs;
  const lines = readline.createInterface({ input: server.stdout });
  await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('server did not start: ' + logs.join(''))), 20000);
    lines.on('line', (l) => {
      let m = l.match(/dispatch admin token \(shown once, stored hashed\): (\S+)/);
      if (m) admin = m[1];
      m = l.match(/doorcode listening on (http:\/\/\S+)/);
      if (m) { base = m[1]; clearTimeout(t); resolve(); }
    });
    server.on('exit', (c) => reject(new Error(`server exited ${c}: ${logs.join('')}`)));
  });
  assert.ok(admin, 'admin token printed');
  day = new Date().toISOString().slice(0, 10);
  nextDay = new Date(Date.now() + 86400000).toISOString().slice(0, 10);

  const parcels = ['P-1001', 'P-1002', 'P-1003'].map((id, i) => ({
    parcel_id: id, recipient: { name: ['Ada Lovelace', 'Grace Hopper', 'Alan Turing'][i], email: `c${i}@example.com` },
    address: `${10 + i} Main Street, Springfield`, value: 120, currency: 'EUR', requires_code: true,
  }));
  let r = await api('POST', '/v1/parcels', { parcels });
  assert.equal(r.status, 200, r.text);
  for (const p of r.json.results) tokens[p.parcel_id] = p.track_url.split('/track/')[1];
  r = await api('POST', '/v1/routes', {
    route_id: 'R-7', courier_id: 'C-42', delivery_date: day,
    stops: parcels.map((p, i) => ({ stop_id: `S-${i + 1}`, address: p.address, parcel_ids: [p.parcel_id] })),
  });
  assert.equal(r.status, 200, r.text);

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  if (browser) await browser.close();
  if (server) {
    server.kill('SIGTERM');
    await new Promise((r) => (server.exitCode !== null ? r() : server.on('exit', r)));
    // Tokens never appear in logs.
    const logs = server.logs.join('');
    for (const t of Object.values(tokens)) assert.ok(!logs.includes(t), 'a track token was logged');
  }
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

let code1;

test('the dispatcher signs in and creates an enrollment code', async () => {
  boardCtx = await browser.newContext({ viewport: DESKTOP });
  board = await boardCtx.newPage();
  let resp = await board.goto(`${base}/board`);
  assert.equal(resp.status(), 200);
  await board.fill('#token', 'not-the-token');
  await board.click('button[type=submit]');
  await board.waitForSelector('.error');
  assert.match(await board.textContent('.error'), /not the dispatch token/);
  await board.fill('#token', admin);
  await Promise.all([board.waitForURL(`${base}/board`), board.click('button[type=submit]')]);
  assert.match(await board.textContent('h1'), new RegExp(`Board for ${day}`));
  const cookies = await boardCtx.cookies();
  const c = cookies.find((k) => k.name === 'doorcode_board');
  assert.ok(c && c.httpOnly && c.sameSite === 'Strict', 'HttpOnly SameSite=Strict session cookie');
  assert.match(await board.textContent('.routes'), /C-42.*0 of 3 delivered/s);
  await board.fill('#courier', 'C-42');
  await board.click('text=Create enrollment code');
  await board.waitForSelector('#enrollment-code');
  assert.match(await board.textContent('#enrollment-code'), /^[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}$/);
});

test('the customer reads the code on the tracking page', async () => {
  const ctx = await browser.newContext({ viewport: PHONE, isMobile: true, hasTouch: true });
  const page = await ctx.newPage();
  const resp = await page.goto(`${base}/track/${tokens['P-1001']}`);
  assert.equal(resp.status(), 200);
  const h = resp.headers();
  assert.match(h['content-security-policy'], /default-src 'self'/);
  assert.match(h['content-security-policy'], /frame-ancestors 'none'/);
  assert.equal(h['referrer-policy'], 'no-referrer');
  assert.equal(h['x-frame-options'], 'DENY');
  assert.equal(h['cache-control'], 'no-store');
  assert.equal(await page.getAttribute('html', 'lang'), 'en');
  for (const landmark of ['header', 'main', 'footer']) assert.equal(await page.locator(landmark).count(), 1);
  code1 = (await page.innerText('#code')).replace(/\D/g, '');
  assert.match(code1, /^\d{6}$/);
  // Screen readers get the digits one by one.
  assert.equal((await page.textContent('.code .sr-only')).trim(), code1.split('').join(' '));
  const api1 = await api('GET', `/v1/track/${tokens['P-1001']}`, null, '');
  assert.equal(api1.json.code, code1, 'the page shows the current code');
  const text = await page.innerText('main');
  assert.match(text, /only in person with the courier at your door/i);
  assert.match(text, /did not order/i);
  await shot(page, 'track-phone');
  await page.setViewportSize(DESKTOP);
  await shot(page, 'track-desktop');
  // Resend: once, then rate-limited.
  await Promise.all([page.waitForURL(/resent=1/), page.click('text=Send the notice again')]);
  assert.match(await page.textContent('[role=status]'), /sent the notice again/);
  const again = await Promise.all([page.waitForResponse((r) => r.url().endsWith('/resend')), page.click('text=Send the notice again')]);
  assert.equal(again[0].status(), 429);
  assert.match(await page.textContent('[role=status]'), /can ask again in/);
  await ctx.close();
});

test('an unknown token gets a plain 404 page', async () => {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  const resp = await page.goto(`${base}/track/${'A'.repeat(43)}`);
  assert.equal(resp.status(), 404);
  const text = await page.innerText('body');
  assert.match(text, /Page not found/);
  assert.doesNotMatch(text, /parcel|delivery code|expired|P-10/i);
  await ctx.close();
});

test('the courier enters the code and the page flips to delivered', async () => {
  const enrollment = (await board.textContent('#enrollment-code')).trim();
  if (hasHandsetCli()) {
    console.log('# courier: the desktop handset CLI (doorcode handset)');
    const dev = new CliDevice();
    await dev.enroll(enrollment);
    await dev.deliver('P-1001', code1);
  } else {
    console.log('# courier: no handset CLI in this binary; the device API with a Node Ed25519 key');
    const dev = new ApiDevice();
    await dev.enroll(enrollment);
    await dev.manifest(); // the handset syncs: its manifest is built on first fetch
    const v = await dev.verify('P-1001', code1);
    assert.equal(v.json.result, 'accepted', v.text);
    const res = await dev.confirmDelivered('P-1001', code1);
    assert.equal(res.status, 'accepted', JSON.stringify(res));
    assert.ok(!res.disputed);
  }
  const ctx = await browser.newContext({ viewport: PHONE, isMobile: true });
  const page = await ctx.newPage();
  await page.goto(`${base}/track/${tokens['P-1001']}`);
  const done = await page.textContent('.done h2');
  assert.match(done, /^Delivered at \d\d:\d\d, code verified$/);
  assert.equal(await page.locator('#code').count(), 0, 'no code once delivered');
  assert.ok(!(await page.content()).includes(code1), 'the old code is gone from the page');
  await shot(page, 'track-delivered-phone');
  await ctx.close();
});

test('the board shows the delivery without a reload and reissues a locked parcel', async () => {
  // Lock P-1002 with max_attempts wrong online checks from a second handset.
  const enr = await api('POST', '/v1/enrollments', { courier_id: 'C-42' });
  const dev = new ApiDevice();
  await dev.enroll(enr.json.enrollment_code);
  await dev.manifest();
  const real = (await api('GET', `/v1/track/${tokens['P-1002']}`, null, '')).json.code;
  const wrong = String((Number(real[0]) + 1) % 10) + real.slice(1);
  let last;
  for (let i = 0; i < 5; i++) last = await dev.verify('P-1002', wrong);
  assert.equal(last.json.result, 'locked', last.text);

  // The live part refreshes by itself (no navigation happens here).
  await board.waitForFunction(() => /1 of 3 delivered/.test(document.querySelector('.routes')?.textContent || ''), null, { timeout: 15000 });
  await board.waitForSelector('[data-reissue="P-1002"]', { timeout: 15000 });
  assert.match(await board.textContent('#parcels'), /P-1001\s*delivered/);
  assert.match(await board.textContent('#sig-h + *'), /verify_lockout|many_wrong_tries/);
  await shot(board, 'board-desktop');
  await board.setViewportSize(PHONE);
  await shot(board, 'board-phone');
  await board.setViewportSize(DESKTOP);

  await Promise.all([board.waitForURL(/done=reissued/), board.click('[data-reissue="P-1002"]')]);
  assert.match(await board.textContent('[role=status]'), /Code reissued/);
  const p2 = await api('GET', '/v1/parcels/P-1002');
  assert.equal(p2.json.locked, false);
  assert.equal(p2.json.attempt, 2);
  // Filters: only delivered parcels.
  await board.selectOption('select[name=status]', 'delivered');
  await Promise.all([board.waitForURL(/status=delivered/), board.click('text=Show')]);
  const rows = await board.locator('#parcels tbody tr').allTextContents();
  assert.equal(rows.length, 1);
  assert.match(rows[0], /P-1001/);
});

test('a board POST without the CSRF token is refused', async () => {
  const noToken = await board.request.post(`${base}/board/close-day`, { form: { date: day } });
  assert.equal(noToken.status(), 403);
  const wrongToken = await board.request.post(`${base}/board/close-day`, { form: { date: day, csrf: 'x'.repeat(43) } });
  assert.equal(wrongToken.status(), 403);
  // Nothing moved.
  assert.equal((await api('GET', '/v1/parcels/P-1003')).json.delivery_date, day);
});

test('"I did not order this" voids the code on the page and the board shows the parcel held', async () => {
  // Its own parcel and route, so the other tests' counts stay as they are.
  let r = await api('POST', '/v1/parcels', { parcels: [{ parcel_id: 'P-2001', recipient: { name: 'Not Ordered', email: 'n@example.com' },
    address: '99 Main Street, Springfield', value: 120, currency: 'EUR', requires_code: true }] });
  assert.equal(r.status, 200, r.text);
  const token = r.json.results[0].track_url.split('/track/')[1];
  tokens['P-2001'] = token;
  r = await api('POST', '/v1/routes', { route_id: 'R-9', courier_id: 'C-49', delivery_date: day,
    stops: [{ stop_id: 'S-1', address: '99 Main Street, Springfield', parcel_ids: ['P-2001'] }] });
  assert.equal(r.status, 200, r.text);
  const ctx = await browser.newContext({ viewport: PHONE, isMobile: true, hasTouch: true });
  const page = await ctx.newPage();
  await page.goto(`${base}/track/${token}`);
  const code = (await page.innerText('#code')).replace(/\D/g, '');
  assert.match(code, /^\d{6}$/);
  assert.equal(await page.locator('[data-not-mine]').count(), 1);
  await Promise.all([page.waitForURL(/held=1/), page.click('[data-not-mine]')]);
  assert.match(await page.textContent('[role=status]'), /on hold/i);
  assert.match(await page.textContent('#status'), /did not order/);
  assert.equal(await page.locator('#code').count(), 0, 'the code is gone from the page');
  assert.ok(!(await page.innerText('main')).includes(code), 'the code is gone from the page');
  assert.equal(await page.locator('[data-not-mine]').count(), 0);
  await shot(page, 'track-held-phone');
  await ctx.close();
  const p = await api('GET', '/v1/parcels/P-2001');
  assert.equal(p.json.status, 'held');
  // The board lists it with the release (reissue) button and the signal.
  await board.goto(`${base}/board?date=${day}`);
  await board.waitForSelector('[data-reissue="P-2001"]');
  assert.match(await board.textContent('#sig-h + *'), /not_ordered/);
});

test('the dispatcher closes the day and signs out', async () => {
  await board.goto(`${base}/board?date=${day}`);
  await board.click(`text=Close ${day}`);
  await board.waitForSelector('[role=status]');
  assert.match(await board.textContent('[role=status]'), new RegExp(`Closed ${day}: 2 parcel\\(s\\) moved to ${nextDay}`));
  const p3 = await api('GET', '/v1/parcels/P-1003');
  assert.equal(p3.json.delivery_date, nextDay);
  assert.equal((await api('GET', '/v1/parcels/P-1001')).json.status, 'delivered');
  await board.click('text=Sign out');
  await board.waitForSelector('#token');
  const live = await board.request.get(`${base}/board/live`);
  assert.equal(live.status(), 401);
  await boardCtx.close();
});
