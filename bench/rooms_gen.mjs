// The load generator of bench/rooms.py: one Node process holding whole rooms
// (their subscribers and their publishers), raw `ws` clients that write and
// read STOMP frames themselves (no STOMP library, no permessage-deflate).
//
// Usage: node rooms_gen.mjs <dir holding node_modules/ws>
// stdin: one JSON line, the plan, then one JSON command a line; stdout: one
// JSON event a line. Every timestamp is process.hrtime.bigint(): libuv's
// CLOCK_MONOTONIC in ns, the same clock in every process of the machine (and
// Python's time.monotonic_ns()), so a stamp written by one process can be
// compared with a receive time taken by another.
//
// Bodies: "<kind><room>.<seq> <stamp ns> " (users mode: then "<sender> ")
// padded with x to the plan's size;
// kind W (warm-up, not checked), B (burst), P (paced). Each subscriber keeps
// the seqs of its room it has seen: a seq seen again is a duplicate, a new
// seq below the highest seen is out of order, a room other than its own is
// stray, and what never came by the end is lost.
//
// Users mode (bench/dms.py; the plan has `users`): one connection per user,
// logged in as that user, that both subscribes (to its `home`: its inbox
// /user/queue/messages, or its room) and sends, each SEND to a target chosen
// by the plan's `targets`: "own" (its home room) or "random" (another user of
// this process, picked by a seeded generator, at the user destination
// /user/<name>/queue/messages). A "room" is then what one seq counter counts:
// a room, or a user's inbox. A private message also comes back to its sender
// (the sender's copy, x-recipient): counted and timed as a delivery, checked
// for duplicates, and lost when it never came.

import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';

const require = createRequire(`${process.argv[2].replace(/\/$/, '')}/`);
const WebSocket = require('ws');

const now = () => process.hrtime.bigint();
const out = (event) => process.stdout.write(`${JSON.stringify(event)}\n`);
const NUL = 0;
const STALL_NS = 10_000_000_000n;
const OPENING = 100;

let plan = null; // {rooms: [{room, dest, pub, subs: [url]}], pubs: [url], login, payload}
// users mode: {users: [{login, url, home, index}], rooms: [{room, dest, sub}], targets, seed}
const users = []; // Conn (users mode), in plan order
const rooms = []; // {room, dest, pub, subs: [Conn], next, target}
const pubs = []; // Conn
let phase = null; // {name, pending, start, end, samples, kind}
let progress = 0; // distinct deliveries (B and P) so far
const totals = { errors: 0, error: '', closed: 0, why: '' };

class Conn {
  constructor(url, room) {
    this.url = url;
    this.room = room; // the room object for a subscriber, null for a publisher
    this.waiter = null;
    this.ws = null;
    this.seen = new Uint8Array(64);
    this.max = -1;
    this.distinct = 0;
    this.target = 0;
    this.dup = 0;
    this.ooo = 0;
    this.stray = 0;
    this.warm = false;
    this.login = null; // users mode: this connection's own login
    this.copies = new Set(); // users mode: "<room>.<seq>" of the copies of what it sent
    this.copyTarget = 0;
    this.copyDup = 0;
  }

  open() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url, ['v12.stomp'], { perMessageDeflate: false });
      this.ws = ws;
      const timer = setTimeout(() => reject(new Error(`${this.url}: no CONNECTED in 30s`)), 30_000);
      ws.on('open', () => {
        const name = this.login ?? plan.login;
        const login = name ? `login:${name}\npasscode:${name}\n` : '';
        this.waiter = (frame) => {
          clearTimeout(timer);
          if (frame.startsWith('CONNECTED')) resolve();
          else reject(new Error(`CONNECT answered ${frame.slice(0, 300)}`));
        };
        ws.send(`CONNECT\naccept-version:1.2\nhost:/\nheart-beat:0,0\n${login}\n\0`);
      });
      ws.on('message', (data) => this.data(data));
      ws.on('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      ws.on('close', (code, reason) => {
        clearTimeout(timer);
        if (!this.closing) {
          totals.closed += 1;
          totals.why ||= `closed ${code} ${reason}`;
        }
        reject(new Error(`closed ${code} ${reason}`));
      });
    });
  }

  subscribe() {
    return new Promise((resolve, reject) => {
      this.waiter = (frame) => {
        if (frame.startsWith('RECEIPT')) resolve();
        else reject(new Error(`SUBSCRIBE answered ${frame.slice(0, 300)}`));
      };
      const dest = this.room.sub || this.room.dest;
      this.ws.send(`SUBSCRIBE\nid:s\ndestination:${dest}\nack:auto\nreceipt:r\n\n\0`);
    });
  }

  data(buf) {
    const t = now();
    let pos = 0;
    const size = buf.length;
    while (pos < size) {
      while (pos < size && (buf[pos] === 10 || buf[pos] === 13)) pos += 1;
      if (pos >= size) break;
      let end = buf.indexOf(NUL, pos);
      if (end < 0) end = size;
      if (buf[pos] === 77 && buf[pos + 1] === 69) this.message(buf, buf.indexOf('\n\n', pos) + 2, t);
      else this.control(buf.toString('utf8', pos, end));
      pos = end + 1;
    }
  }

  control(frame) {
    if (frame.startsWith('ERROR')) {
      totals.errors += 1;
      totals.error ||= frame.slice(0, 300).replace(/\n/g, ' | ');
    }
    const waiter = this.waiter;
    this.waiter = null;
    if (waiter) waiter(frame);
  }

  message(buf, at, t) {
    const kind = buf[at];
    if (kind === 87) {
      // W: warm-up
      if (!this.warm) {
        this.warm = true;
        if (phase && phase.name === 'warm' && --phase.pending === 0) finish();
      }
      return;
    }
    let pos = at + 1;
    let room = 0;
    while (buf[pos] !== 46) room = room * 10 + buf[pos++] - 48;
    pos += 1;
    let seq = 0;
    while (buf[pos] !== 32) seq = seq * 10 + buf[pos++] - 48;
    if (room !== this.room.room) {
      if (plan.targets === 'random') this.copy(`${room}.${seq}`, kind, buf, pos, t);
      else this.stray += 1;
      return;
    }
    if (seq >= this.seen.length) {
      const grown = new Uint8Array(Math.max(seq + 1, this.seen.length * 2));
      grown.set(this.seen);
      this.seen = grown;
    }
    if (this.seen[seq]) {
      this.dup += 1;
      return;
    }
    this.seen[seq] = 1;
    if (plan.users) this.order(buf, pos, seq);
    else if (seq < this.max) this.ooo += 1;
    else this.max = seq;
    this.distinct += 1;
    progress += 1;
    if (kind === 80 && phase) sample(buf, pos, t);
    if (this.distinct === this.target && phase) {
      phase.end = t;
      if (--phase.pending === 0) finish();
    }
  }

  /**
   * Users mode: a room (an inbox) has many senders, whose SENDs may reach it in any
   * order; only one sender's must come in the order it sent them (its number after
   * the stamp).
   */
  order(buf, pos, seq) {
    const from = buf.indexOf(32, pos + 1) + 1;
    let sender = 0;
    for (let at = from; buf[at] !== 32; at += 1) sender = sender * 10 + buf[at] - 48;
    this.maxFrom ||= new Map();
    if (seq < (this.maxFrom.get(sender) ?? -1)) this.ooo += 1;
    else this.maxFrom.set(sender, seq);
  }

  /** The sender's copy of a private message it sent (users mode). */
  copy(key, kind, buf, pos, t) {
    if (this.copies.has(key)) {
      this.copyDup += 1;
      return;
    }
    this.copies.add(key);
    progress += 1;
    if (kind === 80 && phase) sample(buf, pos, t);
    if (this.copies.size === this.copyTarget && phase) {
      phase.end = t;
      if (--phase.pending === 0) finish();
    }
  }
}

/** P: the stamp after the seq (at `pos`, its space): publish-to-delivery in us. */
function sample(buf, pos, t) {
  const from = pos + 1;
  const digits = buf.indexOf(32, from);
  const stamp = BigInt(buf.toString('latin1', from, digits));
  phase.samples.push(Number(t - stamp) / 1000);
}

function body(kind, room, sender = null) {
  const seq = kind === 'W' ? 0 : room.next++;
  const from = sender === null ? '' : `${sender} `;
  const head = `${kind}${room.room}.${seq} ${now()} ${from}`;
  return `SEND\ndestination:${room.dest}\n\n${head.padEnd(plan.payload, 'x')}\0`;
}

async function openPool(all) {
  let next = 0;
  const worker = async () => {
    while (next < all.length) {
      const conn = all[next++];
      await conn.open();
      if (conn.room) await conn.subscribe();
    }
  };
  await Promise.all(Array.from({ length: Math.min(OPENING, all.length) }, worker));
  return all.length;
}

async function openAll() {
  if (plan.users) return openUsers();
  for (const url of plan.pubs) pubs.push(new Conn(url, null));
  for (const r of plan.rooms) {
    const room = { room: r.room, dest: r.dest, pub: r.pub, subs: [], next: 0 };
    room.subs = r.subs.map((url) => new Conn(url, room));
    rooms.push(room);
  }
  return openPool([...pubs, ...rooms.flatMap((r) => r.subs)]);
}

// -- users mode ------------------------------------------------------------------

async function openUsers() {
  for (const r of plan.rooms) {
    rooms.push({ room: r.room, dest: r.dest, sub: r.sub, subs: [], next: 0 });
  }
  for (const u of plan.users) {
    const conn = new Conn(u.url, rooms[u.home]);
    conn.login = u.login;
    conn.index = u.index;
    conn.sent = 0;
    rooms[u.home].subs.push(conn);
    users.push(conn);
  }
  return openPool(users);
}

/** A seeded generator (mulberry32): the same targets on every run. */
function random(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

let pick = null;
/** Where user u's next SEND goes: its own room, or another user's inbox. */
function target(u) {
  if (plan.targets !== 'random' || users.length < 2) return users[u].room;
  pick ||= random(plan.seed || 1);
  let v = Math.floor(pick() * (users.length - 1));
  if (v >= u) v += 1;
  return users[v].room;
}

/** Targets for a phase of `sends` ([user, room] pairs): recipients' seqs and senders' copies. */
function userTargets(sends) {
  const counts = new Map();
  const sent = new Map();
  for (const [u, room] of sends) {
    counts.set(room, (counts.get(room) || 0) + 1);
    sent.set(u, (sent.get(u) || 0) + 1);
  }
  let pending = setTargets((room) => counts.get(room) || 0);
  if (plan.targets === 'random') {
    for (const [u, n] of sent) {
      users[u].copyTarget = users[u].copies.size + n;
      pending += 1;
    }
  }
  return pending;
}

function sendFrom(kind, u, room) {
  const conn = users[u];
  conn.ws.send(body(kind, room, conn.index));
  conn.sent += 1;
  sent();
}

function warmUsers() {
  startPhase('warm', users.filter((c) => !c.warm).length);
  const watched = phase;
  const started = now();
  const again = () => {
    if (phase !== watched) return;
    if (now() - started > 15_000_000_000n) {
      finish(`warm-up: ${users.filter((c) => !c.warm).length} users got nothing in 15s`);
      return;
    }
    // each user writes to the next one's home (a ring), so every home gets one
    users.forEach((conn, u) => {
      if (users[(u + 1) % users.length].warm && conn.warm) return;
      const home = plan.targets === 'random' ? users[(u + 1) % users.length].room : conn.room;
      conn.ws.send(body('W', home));
    });
    setTimeout(again, 200);
  };
  again();
}

function burstUsers(count) {
  const sends = [];
  for (let k = 0; k < count; k += 1) users.forEach((_, u) => sends.push([u, target(u)]));
  startPhase('burst', userTargets(sends));
  pumpAll(sends, ([u]) => users[u].ws, ([u, room]) => sendFrom('B', u, room));
}

function pacedUsers(cmd) {
  // The run's SENDs in one order, the i-th at t0 + i / rate by user i % rooms
  // (every process's users numbered together); this process sends its users'.
  const t0 = BigInt(cmd.t0);
  const mine = new Map(users.map((conn, u) => [conn.index, u]));
  const due = [];
  for (let i = 0; i < cmd.total; i += 1) {
    const u = mine.get(i % cmd.rooms);
    if (u === undefined) continue;
    due.push([t0 + BigInt(Math.round((i * 1e9) / cmd.rate)), u, target(u)]);
  }
  startPhase('paced', userTargets(due.map(([, u, room]) => [u, room])));
  onTime(due, ([, u, room]) => sendFrom('P', u, room));
}

function startPhase(name, pending) {
  phase = { name, pending, start: now(), end: 0n, samples: [], firstSend: 0n, lastSend: 0n, sent: 0 };
  const watched = phase;
  let seen = progress;
  let moved = now();
  const timer = setInterval(() => {
    if (phase !== watched) {
      clearInterval(timer);
      return;
    }
    if (progress !== seen || name === 'warm') {
      seen = progress;
      moved = now();
    } else if (now() - moved > STALL_NS) {
      clearInterval(timer);
      finish(`no delivery for ${Number(STALL_NS) / 1e9}s, ${phase.pending} subscribers short`);
    }
  }, 500);
  if (pending === 0) setImmediate(() => finish());
}

function finish(problem = '') {
  if (!phase) return;
  const done = phase;
  phase = null;
  out({
    ev: 'done',
    phase: done.name,
    problem,
    start: String(done.start),
    end: String(done.end || now()),
    first: String(done.firstSend),
    last: String(done.lastSend),
    sent: done.sent,
    samples: done.samples.map((us) => Math.round(us)),
  });
}

function setTargets(perRoom) {
  let pending = 0;
  for (const room of rooms) {
    const want = room.next + perRoom(room);
    for (const sub of room.subs) {
      sub.target = want;
      if (sub.distinct < want) pending += 1;
    }
  }
  return pending;
}

function sendOne(kind, room) {
  pubs[room.pub].ws.send(body(kind, room));
  sent();
}

/** A SEND of the phase written: its count, its first and last instants. */
function sent() {
  if (!phase) return;
  const t = now();
  if (!phase.sent) phase.firstSend = t;
  phase.lastSend = t;
  phase.sent += 1;
}

function warm() {
  const subs = rooms.flatMap((r) => r.subs);
  startPhase('warm', subs.filter((s) => !s.warm).length);
  const watched = phase;
  const started = now();
  const again = () => {
    if (phase !== watched) return;
    if (now() - started > 15_000_000_000n) {
      finish(`warm-up: ${subs.filter((s) => !s.warm).length} subscribers got nothing in 15s`);
      return;
    }
    for (const room of rooms) if (room.subs.some((s) => !s.warm)) pubs[room.pub].ws.send(body('W', room));
    setTimeout(again, 200);
  };
  again();
}

function burst(count) {
  startPhase('burst', setTargets(() => count));
  const sends = [];
  for (let k = 0; k < count; k += 1) sends.push(...rooms);
  pumpAll(sends, (room) => pubs[room.pub].ws, (room) => sendOne('B', room));
}

/**
 * send(item) for every item, in order, as fast as each one's socket (ws(item)) takes
 * them: 256 at a time, then the event loop's turn; a socket holding over 1 MiB waits.
 */
function pumpAll(items, ws, send) {
  const watched = phase;
  let j = 0;
  const pump = () => {
    let n = 0;
    while (j < items.length && phase === watched) {
      if (ws(items[j]).bufferedAmount > 1 << 20) {
        setTimeout(pump, 1);
        return;
      }
      send(items[j]);
      j += 1;
      if (++n === 256) {
        setImmediate(pump);
        return;
      }
    }
  };
  pump();
}

function paced(cmd) {
  // The run's SENDs in one order, the i-th at t0 + i / rate to room i % rooms;
  // this process sends those of its rooms.
  const t0 = BigInt(cmd.t0);
  const mine = new Map(rooms.map((room) => [room.room, room]));
  const due = [];
  const counts = new Map();
  for (let i = 0; i < cmd.total; i += 1) {
    const room = mine.get(i % cmd.rooms);
    if (!room) continue;
    due.push([t0 + BigInt(Math.round((i * 1e9) / cmd.rate)), room]);
    counts.set(room, (counts.get(room) || 0) + 1);
  }
  startPhase('paced', setTargets((room) => counts.get(room) || 0));
  onTime(due, ([, room]) => sendOne('P', room));
}

/** Call send(item) for each item of `due` ([instant, ...]) at its instant, in this phase. */
function onTime(due, send) {
  const watched = phase;
  let j = 0;
  const tick = () => {
    if (phase !== watched) return;
    const t = now();
    while (j < due.length && due[j][0] <= t) send(due[j++]);
    if (j < due.length) setTimeout(tick, Math.max(0, Number(due[j][0] - now()) / 1e6));
  };
  tick();
}

function report() {
  const r = { ev: 'report', lost: 0, dup: 0, ooo: 0, stray: 0, ...totals };
  for (const room of rooms) {
    for (const sub of room.subs) {
      r.lost += Math.max(0, room.next - sub.distinct);
      r.dup += sub.dup;
      r.ooo += sub.ooo;
      r.stray += sub.stray;
    }
  }
  for (const conn of users) {
    if (plan.targets !== 'random') break;
    r.lost += Math.max(0, conn.sent - conn.copies.size);
    r.dup += conn.copyDup;
  }
  out(r);
}

function close() {
  for (const conn of [...pubs, ...rooms.flatMap((r) => r.subs)]) {
    conn.closing = true;
    if (conn.ws) conn.ws.close(1000);
  }
  setTimeout(() => process.exit(0), 3000).unref();
  let open = pubs.length + rooms.reduce((n, r) => n + r.subs.length, 0);
  const gone = () => {
    if (--open === 0) process.exit(0);
  };
  for (const conn of [...pubs, ...rooms.flatMap((r) => r.subs)]) {
    if (!conn.ws || conn.ws.readyState === WebSocket.CLOSED) gone();
    else conn.ws.on('close', gone);
  }
}

createInterface({ input: process.stdin }).on('line', (line) => {
  const cmd = JSON.parse(line);
  if (!plan) {
    plan = cmd;
    out({ ev: 'ready' });
    return;
  }
  if (cmd.cmd === 'open') {
    openAll().then(
      (n) => out({ ev: 'opened', connections: n }),
      (err) => out({ ev: 'opened', problem: String(err.message || err) }),
    );
  } else if (cmd.cmd === 'warm') (plan.users ? warmUsers : warm)();
  else if (cmd.cmd === 'burst') (plan.users ? burstUsers : burst)(cmd.count);
  else if (cmd.cmd === 'paced') (plan.users ? pacedUsers : paced)(cmd);
  else if (cmd.cmd === 'report') report();
  else if (cmd.cmd === 'close') close();
});
process.stdin.on('end', () => process.exit(0));
