#!/usr/bin/env node
// Line-oriented JSON driver around a real @stomp/stompjs v7 client, used by the
// Python test-suite (tests/jsclient.py) to talk to stomprelay like a browser would.
//
// stdin:  one JSON command per line, e.g. {"cmd":"send","destination":"/topic/a","body":"hi"}
// stdout: one JSON event per line,   e.g. {"event":"message","subscription":"s1",...}
// stderr: stompjs debug output when STOMP_DEBUG=1, plus fatal diagnostics.
//
// Every command may carry "req" (or, failing that, "id"); it is echoed back as "reply_to"
// on the events that answer that command ("ok", "exception", "connected", "receipt",
// "deactivated"). After a command has been carried out the driver emits
// {"event":"ok","cmd":<cmd>,"reply_to":...}; when it fails, {"event":"exception",...}.
// The full protocol is documented in tests/js/README.md.

import { createInterface } from 'node:readline';
import { Client, Versions } from '@stomp/stompjs';
import { WebSocket } from 'ws';

// stompjs v7 expects a global WebSocket; Node 20 has none (and a native one in newer
// Node versions would not accept the extra options we pass), so always use `ws`.
Object.assign(globalThis, { WebSocket });

const DEBUG = process.env.STOMP_DEBUG === '1';

function emit(event) {
  try {
    process.stdout.write(`${JSON.stringify(event)}\n`);
  } catch (err) {
    process.stderr.write(`stomp_driver: cannot emit event: ${err}\n`);
  }
}

function errorMessage(err) {
  if (err instanceof Error) return err.message;
  if (err && typeof err === 'object' && 'message' in err) return String(err.message);
  return String(err);
}

function emitException(err, cmd, replyTo) {
  const ev = { event: 'exception', message: errorMessage(err) };
  if (cmd !== undefined) ev.cmd = cmd;
  if (replyTo !== undefined) ev.reply_to = replyTo;
  if (err instanceof Error && err.stack) ev.stack = err.stack;
  emit(ev);
}

function b64(bytes) {
  if (!bytes) return '';
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
}

function fromB64(text) {
  return new Uint8Array(Buffer.from(text, 'base64'));
}

function frameHeaders(frame) {
  return Object.assign({}, frame?.headers ?? {});
}

function stringHeaders(headers) {
  const out = {};
  for (const [k, v] of Object.entries(headers ?? {})) {
    out[k] = typeof v === 'string' ? v : String(v);
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Driver state: one STOMP client at a time (a new Client object per "connect").

let client = null;
const subscriptions = new Map(); // sub id -> StompSubscription
const messages = new Map(); // `${sub}\u0000${message-id}` and `${sub}\u0001${ack}` -> IMessage
const transactions = new Map(); // tx id -> ITransaction
let exiting = false;

function requireClient() {
  if (!client) throw new Error('not connected: send a "connect" command first');
  return client;
}

function requireConnected() {
  const c = requireClient();
  if (!c.connected) throw new Error('STOMP session is not connected');
  return c;
}

// Registers a receipt watcher when the headers ask for a receipt.
function watchReceipt(c, headers, replyTo, cmd) {
  const receipt = headers?.receipt;
  if (receipt === undefined || receipt === null || receipt === '') return;
  c.watchForReceipt(String(receipt), (frame) => {
    const ev = {
      event: 'receipt',
      receipt_id: frame.headers['receipt-id'],
      headers: frameHeaders(frame),
      cmd,
    };
    if (replyTo !== undefined) ev.reply_to = replyTo;
    emit(ev);
  });
}

function rememberMessage(subId, message) {
  const messageId = message.headers['message-id'];
  if (messageId !== undefined) messages.set(`${subId}\u0000${messageId}`, message);
  const ackId = message.headers.ack;
  if (ackId !== undefined) messages.set(`${subId}\u0001${ackId}`, message);
}

function takeMessage(subId, id) {
  const byMessageId = `${subId}\u0000${id}`;
  const byAck = `${subId}\u0001${id}`;
  const message = messages.get(byMessageId) ?? messages.get(byAck);
  if (!message) return undefined;
  const mid = message.headers['message-id'];
  const aid = message.headers.ack;
  if (mid !== undefined) messages.delete(`${subId}\u0000${mid}`);
  if (aid !== undefined) messages.delete(`${subId}\u0001${aid}`);
  return message;
}

function messageEvent(kind, message, subId) {
  return {
    event: kind,
    subscription: subId ?? message.headers.subscription,
    headers: frameHeaders(message),
    body: message.body,
    binaryBody_b64: b64(message.binaryBody),
    isBinaryBody: Boolean(message.isBinaryBody),
  };
}

function resetState() {
  subscriptions.clear();
  messages.clear();
  transactions.clear();
}

// ---------------------------------------------------------------------------------------
// Commands

function cmdConnect(msg, replyTo) {
  if (client && client.active) {
    throw new Error('already active: send "disconnect" before connecting again');
  }
  if (typeof msg.url !== 'string' || msg.url === '') throw new Error('connect needs "url"');
  resetState();

  const stompVersions = Array.isArray(msg.stompVersions)
    ? new Versions(msg.stompVersions.map(String))
    : Versions.default;
  const protocols = Array.isArray(msg.protocols)
    ? msg.protocols.map(String)
    : stompVersions.protocolVersions();
  const wsOptions = {};
  if (msg.wsHeaders && typeof msg.wsHeaders === 'object') wsOptions.headers = msg.wsHeaders;
  if (typeof msg.origin === 'string') wsOptions.origin = msg.origin;

  const c = new Client({
    webSocketFactory: () => new WebSocket(msg.url, protocols, wsOptions),
    stompVersions,
    connectHeaders: stringHeaders(msg.headers),
    disconnectHeaders: stringHeaders(msg.disconnectHeaders),
    reconnectDelay: typeof msg.reconnectDelay === 'number' ? msg.reconnectDelay : 0,
    debug: DEBUG ? (s) => process.stderr.write(`[stompjs] ${s}\n`) : () => {},
  });
  // Optional knobs, passed through only when given so stompjs defaults stay in force.
  for (const key of [
    'heartbeatIncoming',
    'heartbeatOutgoing',
    'heartbeatToleranceMultiplier',
    'connectionTimeout',
    'maxReconnectDelay',
    'splitLargeFrames',
    'maxWebSocketChunkSize',
    'forceBinaryWSFrames',
    'appendMissingNULLonIncoming',
    'discardWebsocketOnCommFailure',
    'logRawCommunication',
  ]) {
    if (msg[key] !== undefined) c[key] = msg[key];
  }

  c.onConnect = (frame) => {
    const ev = { event: 'connected', headers: frameHeaders(frame) };
    if (replyTo !== undefined) ev.reply_to = replyTo;
    emit(ev);
  };
  c.onStompError = (frame) => {
    emit({ event: 'error', headers: frameHeaders(frame), body: frame.body });
  };
  c.onWebSocketClose = (evt) => {
    emit({
      event: 'ws_close',
      code: evt?.code ?? null,
      reason: evt?.reason ?? '',
      wasClean: evt?.wasClean ?? null,
    });
  };
  c.onWebSocketError = (evt) => {
    emit({ event: 'ws_error', message: errorMessage(evt?.error ?? evt) });
  };
  c.onDisconnect = (frame) => {
    emit({ event: 'disconnected', headers: frameHeaders(frame) });
  };
  c.onUnhandledMessage = (message) => {
    emit(messageEvent('unhandled_message', message));
  };
  c.onUnhandledReceipt = (frame) => {
    emit({
      event: 'unhandled_receipt',
      receipt_id: frame.headers['receipt-id'],
      headers: frameHeaders(frame),
    });
  };
  c.onUnhandledFrame = (frame) => {
    emit({
      event: 'unhandled_frame',
      command: frame.command,
      headers: frameHeaders(frame),
      body: frame.body,
    });
  };
  c.onHeartbeatLost = () => emit({ event: 'heartbeat_lost' });

  client = c;
  c.activate();
}

function cmdSubscribe(msg, replyTo) {
  const c = requireConnected();
  if (typeof msg.destination !== 'string') throw new Error('subscribe needs "destination"');
  const headers = stringHeaders(msg.headers);
  if (msg.id !== undefined && msg.id !== null) headers.id = String(msg.id);
  if (msg.ack !== undefined) headers.ack = String(msg.ack);
  watchReceipt(c, headers, replyTo, 'subscribe');
  let subId = headers.id;
  const sub = c.subscribe(
    msg.destination,
    (message) => {
      rememberMessage(subId, message);
      emit(messageEvent('message', message, subId));
    },
    headers,
  );
  subId = sub.id;
  subscriptions.set(subId, sub);
  return { subscription: subId };
}

function cmdUnsubscribe(msg, replyTo) {
  const c = requireConnected();
  const subId = msg.subscription ?? msg.id;
  if (subId === undefined) throw new Error('unsubscribe needs "id"');
  const headers = stringHeaders(msg.headers);
  watchReceipt(c, headers, replyTo, 'unsubscribe');
  const sub = subscriptions.get(String(subId));
  if (sub) {
    sub.unsubscribe(headers);
  } else {
    c.unsubscribe(String(subId), headers);
  }
  subscriptions.delete(String(subId));
}

function cmdSend(msg, replyTo) {
  const c = requireConnected();
  if (typeof msg.destination !== 'string') throw new Error('send needs "destination"');
  const headers = stringHeaders(msg.headers);
  watchReceipt(c, headers, replyTo, 'send');
  const params = { destination: msg.destination, headers };
  if (typeof msg.binaryBody_b64 === 'string') {
    params.binaryBody = fromB64(msg.binaryBody_b64);
  } else {
    params.body = msg.body === undefined || msg.body === null ? '' : String(msg.body);
  }
  if (msg.skipContentLengthHeader !== undefined) {
    params.skipContentLengthHeader = Boolean(msg.skipContentLengthHeader);
  }
  c.publish(params);
}

function cmdAckNack(kind, msg, replyTo) {
  const c = requireConnected();
  const subId = msg.subscription;
  const id = msg.message_id;
  if (subId === undefined || id === undefined) {
    throw new Error(`${kind} needs "subscription" and "message_id"`);
  }
  const headers = stringHeaders(msg.headers);
  watchReceipt(c, headers, replyTo, kind);
  if (msg.raw) {
    // Bypass the stored message: send the frame with exactly these ids.
    c[kind](String(id), String(subId), headers);
    return;
  }
  const message = takeMessage(String(subId), String(id));
  if (!message) {
    throw new Error(`no received message with message-id/ack ${id} on subscription ${subId}`);
  }
  message[kind](headers);
}

function cmdBegin(msg) {
  const c = requireConnected();
  const tx = c.begin(msg.tx === undefined ? undefined : String(msg.tx));
  transactions.set(tx.id, tx);
  return { tx: tx.id };
}

function cmdEndTx(kind, msg) {
  const c = requireConnected();
  if (msg.tx === undefined) throw new Error(`${kind} needs "tx"`);
  const txId = String(msg.tx);
  const tx = transactions.get(txId);
  if (tx) {
    tx[kind]();
    transactions.delete(txId);
  } else {
    c[kind](txId);
  }
}

function cmdDisconnect(msg, replyTo) {
  const c = requireClient();
  if (msg.headers) c.disconnectHeaders = stringHeaders(msg.headers);
  // Not awaited: commands keep flowing while the DISCONNECT receipt / close is pending.
  c.deactivate({ force: Boolean(msg.force) }).then(
    () => {
      const ev = { event: 'deactivated' };
      if (replyTo !== undefined) ev.reply_to = replyTo;
      emit(ev);
    },
    (err) => emitException(err, 'disconnect', replyTo),
  );
}

function cmdForceDisconnect() {
  // Drops the websocket without a DISCONNECT frame (reconnects if reconnectDelay > 0).
  requireClient().forceDisconnect();
}

async function shutdown(code) {
  if (exiting) return;
  exiting = true;
  if (client && client.active) {
    try {
      await Promise.race([
        client.deactivate({ force: true }),
        new Promise((resolve) => setTimeout(resolve, 500)),
      ]);
    } catch {
      // exiting anyway
    }
  }
  process.exit(code);
}

// Commands are handled synchronously and strictly in arrival order.
function handle(msg) {
  const cmd = msg.cmd;
  const replyTo = msg.req ?? msg.id;
  let extra;
  switch (cmd) {
    case 'connect':
      cmdConnect(msg, replyTo);
      break;
    case 'subscribe':
      extra = cmdSubscribe(msg, replyTo);
      break;
    case 'unsubscribe':
      cmdUnsubscribe(msg, replyTo);
      break;
    case 'send':
      cmdSend(msg, replyTo);
      break;
    case 'ack':
    case 'nack':
      cmdAckNack(cmd, msg, replyTo);
      break;
    case 'begin':
      extra = cmdBegin(msg);
      break;
    case 'commit':
    case 'abort':
      cmdEndTx(cmd, msg);
      break;
    case 'disconnect':
      cmdDisconnect(msg, replyTo);
      break;
    case 'force_disconnect':
      cmdForceDisconnect();
      break;
    case 'ping':
      break;
    case 'exit':
      emit({ event: 'ok', cmd, ...(replyTo !== undefined ? { reply_to: replyTo } : {}) });
      void shutdown(0);
      return;
    default:
      throw new Error(`unknown command: ${JSON.stringify(cmd)}`);
  }
  const ev = { event: 'ok', cmd, ...(extra ?? {}) };
  if (replyTo !== undefined) ev.reply_to = replyTo;
  emit(ev);
}

// ---------------------------------------------------------------------------------------
// Main loop

process.on('uncaughtException', (err) => emitException(err));
process.on('unhandledRejection', (err) => emitException(err));
// A closed stdout (parent gone) must not crash-loop through uncaughtException.
process.stdout.on('error', () => process.exit(0));

const rl = createInterface({ input: process.stdin, crlfDelay: Infinity, terminal: false });
rl.on('line', (line) => {
  const text = line.trim();
  if (text === '') return;
  let msg;
  try {
    msg = JSON.parse(text);
  } catch (err) {
    emitException(new Error(`invalid JSON command: ${errorMessage(err)}`));
    return;
  }
  if (!msg || typeof msg !== 'object' || Array.isArray(msg)) {
    emitException(new Error('command must be a JSON object'));
    return;
  }
  if (exiting) return;
  try {
    handle(msg);
  } catch (err) {
    emitException(err, msg.cmd, msg.req ?? msg.id);
  }
});
// EOF on stdin: the parent went away or is done with us.
rl.on('close', () => {
  void shutdown(0);
});

emit({ event: 'ready', node: process.version, pid: process.pid });
