/*
 * stomprelay chat: plain JavaScript over @stomp/stompjs v7 (the UMD bundle, window.StompJs).
 *
 * Destinations (docs: shared contract, section 3):
 *   SUBSCRIBE /topic/room/{id}              CHAT / JOIN / LEAVE / SYSTEM events (JSON)
 *   SEND      /app/room/{id}/join           {"username": ...}
 *   SEND      /app/room/{id}/message        {"message": ...}
 *   SEND      /app/room/{id}/leave
 *   SUBSCRIBE /app/room/{id}/participants   request/reply: one MESSAGE, then we unsubscribe
 *   SUBSCRIBE /topic/system                 operator notifications
 *   SEND      /app/auth/refresh             a new token (text) replaces the session's credential
 *   SUBSCRIBE /user/queue/messages          private messages (inbox.js: conversations, unread)
 *
 * Room events the relay made carry x-event-type (JOIN, LEAVE, CHAT, SYSTEM, SYNC), a header
 * no client can set: the page takes the type from it alone. A MESSAGE without it is a raw
 * SEND by some client, shown as plain text under the relay's x-sender, whatever its body says.
 *
 * Sign-in (GET auth/config): with no authentication the username goes as the STOMP login, as
 * ever; with authentication a JWT goes as passcode and as "Authorization: Bearer", from the
 * development issuer (GET dev/token?user=NAME, only on a relay run with --dev-tokens) or
 * pasted. Its payload is decoded here only to show who you are and when it expires; the
 * relay checks it. A refusal (ERROR) is shown in plain words and, for sign-in refusals, ends
 * the reconnecting: the page goes back to the sign-in form.
 *
 * After a drop, stompjs reconnects by itself (reconnectDelay); onConnect then subscribes to
 * the room again and re-joins it, on whichever relay the load balancer picked.
 *
 * Durable rooms (docs/history.md): a first visit to a room subscribes with x-history:50; the
 * page remembers, per room, the last (x-epoch, x-offset) it showed and the last 50 entries,
 * in sessionStorage, and every later subscription to that room (a reconnect, a relay
 * failover, a reload of the tab, coming back to the room) asks for x-since-offset /
 * x-since-epoch instead. MESSAGEs whose (epoch, offset) or message-id it already showed are
 * dropped; the RECEIPT (x-recovered, x-offset) tells it how many it missed.
 *
 * Text that came from the network is only ever put in the page with textContent.
 */
"use strict";

(() => {
  const StompJs = window.StompJs;
  const durable = window.StomprelayDurable;
  const ROOM_ID = /^[A-Za-z0-9_.-]{1,64}$/;
  // Control characters the relay refuses in usernames and messages (all but \t and \n).
  const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g;
  const MAX_MESSAGES = 500;
  const ROOMS_REFRESH_MS = 5000;
  /** x-history asked for on a first visit to a room, and entries kept per room for a reload. */
  const HISTORY_SIZE = 50;
  /** Rooms whose position and entries are kept in sessionStorage (the most recently used). */
  const STORED_ROOMS = 10;
  /** How long to wait for the replayed messages a RECEIPT announced before giving up. */
  const REPLAY_TIMEOUT_MS = 5000;
  /** Renew the token (development issuer) or warn, when it has less than this left. */
  const RENEW_BEFORE_MS = 60000;
  const ROOMS_KEY = "stomprelay.rooms";
  const TAB_KEY = "stomprelay.tab";
  const params = new URLSearchParams(window.location.search);
  const DEBUG = params.has("debug");

  const byId = (id) => document.getElementById(id);
  const ui = {
    state: byId("state"),
    serverId: byId("server-id"),
    connectForm: byId("connect-form"),
    devWarning: byId("dev-warning"),
    usernameField: byId("username-field"),
    username: byId("username"),
    tokenDetails: byId("token-details"),
    tokenSummary: byId("token-summary"),
    token: byId("token"),
    connect: byId("connect"),
    disconnect: byId("disconnect"),
    loginError: byId("login-error"),
    identity: byId("identity"),
    identityName: byId("identity-name"),
    identitySub: byId("identity-sub"),
    tokenExpiry: byId("token-expiry"),
    renewForm: byId("renew-form"),
    newToken: byId("new-token"),
    renew: byId("renew"),
    joinForm: byId("join-form"),
    room: byId("room"),
    join: byId("join"),
    leave: byId("leave"),
    rooms: byId("rooms"),
    roomsEmpty: byId("rooms-empty"),
    currentRoom: byId("current-room"),
    messages: byId("messages"),
    messageForm: byId("message-form"),
    message: byId("message"),
    send: byId("send"),
    participants: byId("participants"),
    participantCount: byId("participant-count"),
    alert: byId("alert"),
    chat: byId("chat"),
    conversation: byId("conversation"),
  };

  /** Everything the page knows; exposed as window.stomprelayChat for debugging and tests. */
  const chat = {
    client: null,
    username: "",
    sessionId: "",
    serverId: "",
    /** The room we are in; kept across reconnects so onConnect can rejoin it. */
    room: "",
    roomSubscription: null,
    /** The current room subscription's replay state (see enterRoom). */
    feed: null,
    /** Per room: {epoch, offset, entries, keys, ids, used} (see roomRecord). */
    history: new Map(),
    /** The room to enter once connected, after a reload of a tab that was in it. */
    resumeRoom: "",
    receipts: 0,
    /** Session ids this page had before its current one (to recognise their LEAVEs). */
    pastSessions: new Set(),
    /** True between losing a live connection and getting the next CONNECTED. */
    dropped: false,
    participantsInFlight: false,
    participantsAgain: false,
    roomsTimer: 0,
    /** What GET auth/config said; `known` false until it answered (or failed). */
    auth: { known: false, required: false, devTokens: false },
    /**
     * Only the x-event-type header, which the relay alone sets, says what a room MESSAGE
     * is; a body that claims a type is a raw client message. Always on: were it to wait
     * for auth/config, a failed fetch would let forged events through.
     */
    strictEvents: true,
    /** The signed-in token, its decoded claims, and whether it came from the dev issuer. */
    token: "",
    claims: null,
    devIssued: false,
    renewing: false,
    /** Set by a refusal that ends the session: the close that follows is not a drop. */
    refusal: null,
    /** Destinations (and rooms) the relay said are forbidden to this sign-in. */
    forbidden: new Set(),
    forbiddenRooms: new Set(),
    /** When the last ERROR came (the close right after it is no surprise). */
    errorAt: 0,
    signingIn: false,
    /** The token already announced as running out, and one the dev issuer failed to renew. */
    expiringToken: "",
    autoRenewFailed: "",
  };
  window.stomprelayChat = chat;

  // -- helpers ---------------------------------------------------------------------------

  function brokerUrl() {
    const override = params.get("ws");
    if (override) return override;
    const url = new URL("ws", window.location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.search = "";
    url.hash = "";
    return url.href;
  }

  function clean(text) {
    return String(text).replace(CONTROL, "").trim();
  }

  function isConnected() {
    return Boolean(chat.client && chat.client.connected);
  }

  function announce(text) {
    ui.alert.textContent = "";
    window.setTimeout(() => {
      ui.alert.textContent = text;
    }, 50);
  }

  function setInvalid(input, message) {
    if (message) {
      input.setAttribute("aria-invalid", "true");
      input.focus();
      announce(message);
    } else {
      input.removeAttribute("aria-invalid");
    }
  }

  const STATE_LABELS = {
    disconnected: "disconnected",
    connecting: "connecting…",
    connected: "connected",
    reconnecting: "reconnecting…",
  };

  function setState(name) {
    ui.state.dataset.state = name;
    ui.state.textContent = STATE_LABELS[name] || name;
    document.body.dataset.state = name;
    updateControls();
  }

  function setServer(serverId) {
    chat.serverId = serverId;
    ui.serverId.dataset.serverId = serverId;
    ui.serverId.textContent = serverId || "none";
  }

  function updateControls() {
    const active = Boolean(chat.client && chat.client.active);
    const connected = isConnected();
    const { required, devTokens } = chat.auth;
    ui.username.disabled = active;
    ui.token.disabled = active;
    // Signed in with a token: who you are comes from it, so the sign-in fields step aside.
    ui.usernameField.hidden = required && (active || !devTokens);
    ui.tokenDetails.hidden = !required || active;
    ui.devWarning.hidden = !(required && devTokens) || active;
    ui.identity.hidden = !(active && chat.claims);
    ui.renewForm.hidden = !(connected && chat.claims && ui.tokenExpiry.dataset.expiring === "true");
    ui.connect.hidden = active;
    ui.disconnect.hidden = !active;
    ui.join.disabled = !connected;
    ui.leave.disabled = !(connected && chat.room);
    ui.message.disabled = !chat.room;
    ui.send.disabled = !(connected && chat.room);
    for (const button of ui.rooms.querySelectorAll("button")) {
      button.disabled = !connected;
    }
    inbox.setConnected(connected);
  }

  function formatClock(ms) {
    return new Date(ms).toLocaleTimeString([], {
      hour: "2-digit",
      minute: "2-digit",
      second: "2-digit",
    });
  }

  function formatTime(ms) {
    const date = Number.isFinite(ms) ? new Date(ms) : new Date();
    return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  // -- the message log -------------------------------------------------------------------

  /**
   * Put one entry in the log: type is CHAT, JOIN, LEAVE, SYSTEM, STATUS or ERROR.
   * `before` inserts it ahead of that entry (replayed history goes above the join line);
   * `history` marks an entry that came from the room's log rather than live; `degraded`
   * one the relay delivered while it could not reach Redis. Every string goes in through
   * textContent. Returns the entry.
   */
  function addEntry(
    type,
    {
      author = "",
      text = "",
      timestamp,
      sessionId = "",
      serverId = "",
      before = null,
      history = false,
      degraded = false,
      offset = null,
      messageId = "",
      raw = false,
      userId = "",
    },
  ) {
    const item = document.createElement("li");
    item.className = `entry entry-${type.toLowerCase()}`;
    item.dataset.type = type;
    if (sessionId) item.dataset.sessionId = sessionId;
    if (serverId) item.dataset.serverId = serverId;
    if (userId) item.dataset.userId = userId;
    if (offset !== null) item.dataset.offset = String(offset);
    if (messageId) item.dataset.messageId = messageId;
    if (history) item.dataset.history = "true";
    if (degraded) item.dataset.degraded = "true";
    if (isOwn(sessionId)) item.classList.add("own");

    const meta = document.createElement("div");
    meta.className = "meta";
    if (author) {
      const who = document.createElement("span");
      who.className = "author";
      who.textContent = author;
      meta.append(who);
    }
    const when = document.createElement("time");
    const date = Number.isFinite(timestamp) ? new Date(timestamp) : new Date();
    when.dateTime = date.toISOString();
    when.textContent = formatTime(date.getTime());
    if (serverId) when.title = `via relay ${serverId}`;
    meta.append(when);
    if (raw) {
      const mark = document.createElement("span");
      mark.className = "raw";
      mark.textContent = "raw message";
      mark.title = "Sent straight to the room's topic by a client, not a chat message.";
      meta.append(mark);
    }
    if (degraded) {
      const mark = document.createElement("span");
      mark.className = "degraded";
      mark.textContent = "not synced";
      mark.title =
        "Delivered while this relay could not reach the cluster: " +
        "people on other relays may get it later.";
      meta.append(mark);
    }

    const body = document.createElement("p");
    body.className = "text";
    body.textContent = text;
    item.append(meta, body);
    place(item, before, sessionId && sessionId === chat.sessionId);
    return item;
  }

  /**
   * A line of its own in the log (no time): HISTORY ("Earlier messages"), MISSED
   * ("N messages you missed") or GAP ("... could not be recovered").
   */
  function addNotice(type, text, { before = null, count = null, reason = "" } = {}) {
    const item = document.createElement("li");
    item.className = `entry notice entry-${type.toLowerCase()}`;
    item.dataset.type = type;
    if (count !== null) item.dataset.count = String(count);
    if (reason) item.dataset.reason = reason;
    const body = document.createElement("p");
    body.className = "text";
    body.textContent = text;
    item.append(body);
    place(item, before, false);
    return item;
  }

  function place(item, before, own) {
    const log = ui.messages;
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    if (before && before.isConnected && before.parentNode === log) log.insertBefore(item, before);
    else log.append(item);
    while (log.children.length > MAX_MESSAGES) log.firstElementChild.remove();
    if (atBottom || own) log.scrollTop = log.scrollHeight;
  }

  function status(text, type = "STATUS") {
    return addEntry(type, { text });
  }

  function isOwn(sessionId) {
    return Boolean(sessionId) && (sessionId === chat.sessionId || chat.pastSessions.has(sessionId));
  }

  function plural(n, one, many) {
    return `${n} ${n === 1 ? one : many}`;
  }

  const LEAVE_REASONS = {
    left: "",
    disconnected: " (disconnected)",
    "server-lost": " (their relay went away)",
  };

  function parseObject(body) {
    try {
      const value = JSON.parse(body);
      return value && typeof value === "object" && !Array.isArray(value) ? value : null;
    } catch {
      return null;
    }
  }

  /**
   * What a room MESSAGE is: {type, event, sender, body}. From a relay that stamps its events,
   * the type is x-event-type's and nothing else's (the relay strips that header from what
   * clients send); a MESSAGE without it is a raw SEND by some client, type RAW, attributed
   * to x-sender (set by the relay too), whatever its body claims to be. From an older relay
   * (no such headers) the body's "type" is all there is.
   */
  function classify(headers, body) {
    const object = parseObject(body);
    if (chat.strictEvents) {
      const type = String(headers["x-event-type"] || "").trim();
      if (!type) {
        return { type: "RAW", event: null, sender: clean(headers["x-sender"] || ""), body };
      }
      return { type, event: object || {}, sender: "", body };
    }
    if (!object || typeof object.type !== "string") {
      return { type: "RAW", event: null, sender: "", body };
    }
    return { type: object.type, event: object, sender: "", body };
  }

  /**
   * Show one room MESSAGE (classified); `where` holds addEntry's placement and history
   * options. Returns [kind, entry]: kind is "message" (CHAT, SYSTEM, raw messages and anything
   * else people wrote) or "presence" (JOIN, LEAVE).
   */
  function renderRoomEvent({ type, event, sender, body }, where) {
    if (type === "RAW") {
      // Published straight to /topic/room/{id} by some client: its text, under its sender.
      const author = sender || "(raw message)";
      return ["message", addEntry("RAW", { ...where, author, text: body, raw: true })];
    }
    const who = typeof event.username === "string" && event.username ? event.username : "someone";
    const details = {
      ...where,
      timestamp: event.timestamp,
      sessionId: typeof event.sessionId === "string" ? event.sessionId : "",
      serverId: typeof event.serverId === "string" ? event.serverId : "",
      userId: typeof event.userId === "string" ? event.userId : "",
    };
    switch (type) {
      case "CHAT":
        return [
          "message",
          addEntry("CHAT", { ...details, author: who, text: String(event.message ?? "") }),
        ];
      case "JOIN":
        return ["presence", addEntry("JOIN", { ...details, text: `${who} joined` })];
      case "LEAVE":
        if (chat.pastSessions.has(event.sessionId)) {
          // Our connection from before a reconnect (or a reload), cleaned up by the cluster.
          const on = event.serverId ? ` on ${event.serverId}` : "";
          const why = event.reason === "server-lost" ? ": that relay went away" : "";
          const text = `Your previous connection${on} left the room${why}`;
          return ["presence", addEntry("LEAVE", { ...details, text })];
        }
        const text = `${who} left${LEAVE_REASONS[event.reason] ?? ""}`;
        return ["presence", addEntry("LEAVE", { ...details, text })];
      case "SYSTEM":
        return [
          "message",
          addEntry("SYSTEM", { ...details, text: String(event.message ?? "System message") }),
        ];
      default:
        return [
          "message",
          addEntry("CHAT", { ...details, author: who, text: String(event.message ?? body) }),
        ];
    }
  }

  // -- durable rooms: offsets, duplicates, replay ------------------------------------------

  /** What the page knows of one room's log: where it is in it, and what it showed. */
  function roomRecord(roomId) {
    let record = chat.history.get(roomId);
    if (!record) {
      record = { ...durable.position(), entries: [], used: 0 };
      chat.history.set(roomId, record);
    }
    return record;
  }

  /** Note a shown MESSAGE: its key and id (duplicates), the position, the entry (a reload). */
  function remember(record, { epoch, offset, id, degraded, body, type, sender }) {
    durable.note(record, { epoch, offset }, id);
    record.entries.push({ epoch, offset, id, degraded, body, type, sender });
    const extra = record.entries.length - HISTORY_SIZE;
    if (extra > 0) record.entries.splice(0, extra);
    saveRoomsSoon();
  }

  function onRoomMessage(feed, message) {
    if (feed !== chat.feed || feed.roomId !== chat.room) return;
    const headers = message.headers;
    const record = feed.record;
    const { epoch, offset, id } = durable.placeOf(headers);
    const degraded = headers["x-degraded"] === "true";

    if (Object.prototype.hasOwnProperty.call(headers, "x-gap")) {
      onGap(feed, headers["x-gap"], epoch, id);
      return;
    }
    const classified = classify(headers, message.body);
    const event = classified.event;
    // x-sync, like x-gap and x-event-type, is a header only the relay sets.
    if (headers["x-sync"] === "true" || classified.type === "SYNC") {
      if (event && Array.isArray(event.participants)) {
        renderParticipants(event.participants);
        refreshRooms();
      }
      return;
    }

    // A message past the end of the replay the RECEIPT announced: the replay is over.
    if (feed.replaying && offset !== null && offset > feed.replayTo && epoch === feed.replayEpoch) {
      endReplay(feed);
    }
    if (!durable.isDuplicate(record, { epoch, offset }, id)) {
      const replayed = feed.replaying && offset !== null;
      if (replayed && feed.history && !feed.firstReplayed) {
        // A first visit: the room's recent history, above the line saying we joined.
        feed.firstReplayed = addNotice("HISTORY", "Earlier messages", { before: feed.seam });
      }
      const [kind, item] = renderRoomEvent(classified, {
        before: replayed ? feed.seam : null,
        history: replayed,
        degraded,
        offset,
        messageId: id,
      });
      remember(record, {
        epoch,
        offset,
        id,
        degraded,
        body: message.body,
        type: headers["x-event-type"] || "",
        sender: headers["x-sender"] || "",
      });
      if (replayed) {
        if (!feed.firstReplayed) feed.firstReplayed = item;
        if (kind === "message") feed.missed += 1;
        else feed.presence += 1;
      } else if (kind === "presence") {
        requestParticipants();
        refreshRooms();
      }
    }
    if (feed.replaying && offset !== null && offset >= feed.replayTo) endReplay(feed);
  }

  /** x-gap:FROM-TO (trimmed before we got them) or x-gap:reset (a new epoch). */
  function onGap(feed, value, epoch, id) {
    const record = feed.record;
    if (durable.isDuplicate(record, { epoch: "", offset: null }, id)) return;
    durable.seen(record, { epoch: "", offset: null }, id);
    const { reset, count } = durable.gap(record, value, epoch);
    let text = "Some messages could not be recovered";
    if (reset) text = "The room's history was reset";
    else if (count !== null) {
      text = `${plural(count, "message", "messages")} could not be recovered`;
    }
    const reason = reset ? "reset" : "gap";
    addNotice("GAP", text, { before: feed.replaying ? feed.seam : null, count, reason });
    announce(text);
    saveRoomsSoon();
  }

  /** The SUBSCRIBE's RECEIPT: where the log is now, and whether everything we missed is coming. */
  function onRoomReceipt(feed, frame) {
    if (feed !== chat.feed) return;
    const found = durable.receipt(feed.record, feed, frame.headers);
    if (found.unrecovered) {
      const text = "Some messages could not be recovered";
      addNotice("GAP", text, { before: feed.seam, reason: "unrecovered" });
      announce(text);
    } else if (feed.since !== null) {
      feed.counting = true;
    }
    if (found.moved) saveRoomsSoon();
    if (found.replayTo !== null) {
      feed.replaying = true;
      feed.replayTo = found.replayTo;
      feed.replayEpoch = found.epoch;
      window.clearTimeout(feed.timer);
      feed.timer = window.setTimeout(() => endReplay(feed), REPLAY_TIMEOUT_MS);
    } else {
      // Nothing to replay, or no log at all (history off, no Redis): everything is live.
      endReplay(feed);
    }
  }

  /** The replayed messages are all in: say how many we missed, let the live region speak. */
  function endReplay(feed) {
    if (feed.done) return;
    feed.done = true;
    feed.replaying = false;
    window.clearTimeout(feed.timer);
    if (feed === chat.feed) ui.messages.removeAttribute("aria-busy");
    if (feed.counting && feed.missed > 0) {
      const text = `${plural(feed.missed, "message", "messages")} you missed`;
      addNotice("MISSED", text, { before: feed.firstReplayed || feed.seam, count: feed.missed });
      announce(text);
    }
    if (feed.presence > 0 && feed === chat.feed) {
      requestParticipants();
      refreshRooms();
    }
  }

  // -- sessionStorage: positions per room, and the tab's session (for a reload) -----------

  /** Web Storage ("sessionStorage" or "localStorage"), which may be disabled or full. */
  function storageOf(name) {
    return {
      get(key) {
        try {
          return window[name].getItem(key);
        } catch {
          return null;
        }
      },
      set(key, value) {
        try {
          window[name].setItem(key, value);
          return true;
        } catch {
          return false;
        }
      },
      remove(key) {
        try {
          window[name].removeItem(key);
        } catch {
          // Storage may be disabled.
        }
      },
    };
  }

  const tabStorage = storageOf("sessionStorage");
  const storageGet = tabStorage.get;
  const storageSet = tabStorage.set;
  const storageRemove = tabStorage.remove;

  function loadRooms() {
    let data = null;
    try {
      data = JSON.parse(storageGet(ROOMS_KEY) || "null");
    } catch {
      data = null;
    }
    if (!data || typeof data !== "object") return;
    for (const [roomId, saved] of Object.entries(data)) {
      if (!ROOM_ID.test(roomId) || !saved || typeof saved.epoch !== "string") continue;
      if (!Number.isSafeInteger(saved.offset) || saved.offset < 0) continue;
      const record = roomRecord(roomId);
      record.epoch = saved.epoch;
      record.offset = saved.offset;
      record.used = Number(saved.used) || 0;
      const entries = Array.isArray(saved.entries) ? saved.entries : [];
      for (const entry of entries.slice(-HISTORY_SIZE)) {
        if (!entry || typeof entry.body !== "string") continue;
        const restored = {
          epoch: typeof entry.epoch === "string" ? entry.epoch : "",
          offset: Number.isSafeInteger(entry.offset) ? entry.offset : null,
          id: typeof entry.id === "string" ? entry.id : "",
          degraded: entry.degraded === true,
          body: entry.body,
          type: typeof entry.type === "string" ? entry.type : "",
          sender: typeof entry.sender === "string" ? entry.sender : "",
        };
        record.entries.push(restored);
        durable.seen(record, restored, restored.id);
      }
    }
  }

  let saveTimer = 0;
  function saveRoomsSoon() {
    if (!saveTimer) saveTimer = window.setTimeout(saveRooms, 250);
  }

  function saveRooms() {
    window.clearTimeout(saveTimer);
    saveTimer = 0;
    const kept = [...chat.history.entries()]
      .filter(([, record]) => record.epoch)
      .sort((a, b) => b[1].used - a[1].used)
      .slice(0, STORED_ROOMS);
    const data = (withEntries) =>
      JSON.stringify(
        Object.fromEntries(
          kept.map(([roomId, r]) => {
            const entries = withEntries ? r.entries : [];
            return [roomId, { epoch: r.epoch, offset: r.offset, used: r.used, entries }];
          }),
        ),
      );
    // Over the quota: keep the positions at least (a reload then shows only what it missed).
    if (!storageSet(ROOMS_KEY, data(true))) storageSet(ROOMS_KEY, data(false));
  }

  function saveTab() {
    if (!chat.username || !(chat.client && chat.client.active)) return;
    const sessions = [...chat.pastSessions];
    if (chat.sessionId) sessions.push(chat.sessionId);
    const tab = {
      username: chat.username,
      room: chat.room || chat.resumeRoom,
      sessions: sessions.slice(-20),
    };
    // Signed in with a token: a reload signs in with it again (this tab only: sessionStorage).
    if (chat.token) {
      tab.token = chat.token;
      tab.devIssued = chat.devIssued;
    }
    storageSet(TAB_KEY, JSON.stringify(tab));
  }

  function loadTab() {
    try {
      const tab = JSON.parse(storageGet(TAB_KEY) || "null");
      if (tab && typeof tab.username === "string" && clean(tab.username)) return tab;
    } catch {
      // Not ours, or damaged: start afresh.
    }
    return null;
  }

  // -- private conversations (inbox.js) ---------------------------------------------------

  /** The user the relay knows this session as: the token's sub, else the STOMP login. */
  function selfUserId() {
    return chat.claims ? clean(chat.claims.sub) : chat.username;
  }

  /** The chat column shows the room or the open private conversation. */
  function showView(view) {
    ui.chat.hidden = view !== "room";
    ui.conversation.hidden = view === "room";
  }

  const inbox = window.StomprelayInbox.create({
    elements: {
      panel: byId("dm-panel"),
      list: byId("conversations"),
      empty: byId("conversations-empty"),
      total: byId("dm-unread"),
      notice: byId("dm-notice"),
      conversation: ui.conversation,
      heading: byId("conversation-peer"),
      headingBadge: byId("conversation-badge"),
      back: byId("conversation-back"),
      log: byId("dm-messages"),
      readOnly: byId("conversation-readonly"),
      form: byId("dm-form"),
      input: byId("dm-message"),
      send: byId("dm-send"),
      participants: ui.participants,
    },
    clean,
    announce,
    formatTime,
    storage: tabStorage,
    persistent: storageOf("localStorage"),
    onView: showView,
  });
  chat.inbox = inbox;

  // -- participants ------------------------------------------------------------------------

  /**
   * The registry lists sessions; the page lists people: a user with several connections
   * (tabs, devices, a reconnect not yet cleaned up) once, keyed by the user id when the relay
   * gives one (userId), else by username. Each person keeps the list of their sessions.
   */
  function groupParticipants(people) {
    const groups = new Map();
    for (const person of people) {
      if (!person || typeof person !== "object") continue;
      const username = String(person.username ?? "");
      const userId = typeof person.userId === "string" && person.userId ? person.userId : "";
      const key = userId ? `id:${userId}` : `name:${username}`;
      let group = groups.get(key);
      if (!group) {
        group = { username, userId, sessions: [] };
        groups.set(key, group);
      }
      const sessionId = String(person.sessionId ?? "");
      if (!group.sessions.some((s) => s.sessionId === sessionId)) {
        group.sessions.push({ sessionId, serverId: String(person.serverId ?? "") });
      }
    }
    return [...groups.values()];
  }

  function renderParticipants(people) {
    const items = groupParticipants(people).map((person) => {
      const item = document.createElement("li");
      const own = person.sessions.find((s) => s.sessionId && s.sessionId === chat.sessionId);
      const main = own || person.sessions[0];
      item.dataset.username = person.username;
      item.dataset.sessionId = main.sessionId;
      item.dataset.serverId = main.serverId;
      item.dataset.sessions = String(person.sessions.length);
      item.dataset.sessionIds = person.sessions.map((s) => s.sessionId).join(" ");
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = person.username;
      if (person.userId) item.dataset.userId = person.userId;
      if (person.userId && !own && person.userId !== selfUserId()) {
        // Someone else with a user id: a click opens a private conversation with them.
        const button = document.createElement("button");
        button.type = "button";
        button.className = "dm-open";
        button.dataset.userId = person.userId;
        button.disabled = !isConnected();
        button.setAttribute("aria-label", `Private conversation with ${person.username}`);
        button.append(name);
        item.append(button);
      } else {
        item.append(name);
      }
      if (own) {
        item.classList.add("own");
        const you = document.createElement("span");
        you.className = "you";
        you.textContent = " (you)";
        name.append(you);
      }
      const servers = [...new Set(person.sessions.map((s) => s.serverId).filter(Boolean))];
      const parts = [];
      if (servers.length) parts.push(`on ${servers.join(", ")}`);
      if (person.sessions.length > 1) parts.push(`${person.sessions.length} connections`);
      const where = document.createElement("span");
      where.className = "where";
      where.textContent = parts.join(" · ");
      item.append(where);
      return item;
    });
    ui.participants.replaceChildren(...items);
    ui.participants.removeAttribute("data-stale");
    ui.participantCount.textContent = String(items.length);
    inbox.decorate();
  }

  /** Ask for the list (request/reply); coalesce requests made while one is in flight. */
  function requestParticipants() {
    const client = chat.client;
    const room = chat.room;
    if (!isConnected() || !room) return;
    if (chat.participantsInFlight) {
      chat.participantsAgain = true;
      return;
    }
    chat.participantsInFlight = true;
    const subscription = client.subscribe(`/app/room/${room}/participants`, (message) => {
      try {
        subscription.unsubscribe();
      } catch {
        // Already disconnected: the subscription died with the connection.
      }
      chat.participantsInFlight = false;
      if (room === chat.room) {
        try {
          const data = JSON.parse(message.body);
          renderParticipants(Array.isArray(data.participants) ? data.participants : []);
        } catch {
          // A malformed reply leaves the previous list in place.
        }
      }
      if (chat.participantsAgain) {
        chat.participantsAgain = false;
        requestParticipants();
      }
    });
  }

  // -- rooms -------------------------------------------------------------------------------

  function renderRooms(rooms) {
    const sorted = rooms
      .filter((room) => room && typeof room.roomId === "string")
      .sort((a, b) => a.roomId.localeCompare(b.roomId));
    const items = sorted.map((room) => {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "room-link";
      button.dataset.room = room.roomId;
      button.disabled = !isConnected();
      if (room.roomId === chat.room) button.setAttribute("aria-current", "true");
      const name = document.createElement("span");
      name.className = "room-name";
      name.textContent = room.roomId;
      const count = document.createElement("span");
      count.className = "count";
      const n = Number(room.participants) || 0;
      count.textContent = String(n);
      count.title = `${n} ${n === 1 ? "person" : "people"}`;
      button.setAttribute("aria-label", `${room.roomId}, ${count.title}`);
      button.append(name, count);
      item.append(button);
      return item;
    });
    ui.rooms.replaceChildren(...items);
    ui.roomsEmpty.hidden = items.length > 0;
  }

  let roomsFetch = null;
  async function refreshRooms() {
    if (roomsFetch) return roomsFetch;
    roomsFetch = (async () => {
      try {
        const response = await fetch("api/rooms", { cache: "no-store" });
        if (response.ok) {
          const rooms = await response.json();
          if (Array.isArray(rooms)) renderRooms(rooms);
        }
      } catch {
        // The relay is unreachable for a moment; the timer tries again.
      } finally {
        roomsFetch = null;
      }
    })();
    return roomsFetch;
  }

  // -- joining and leaving -----------------------------------------------------------------

  function showRoom(roomId) {
    ui.currentRoom.dataset.room = roomId;
    ui.currentRoom.textContent = roomId ? `# ${roomId}` : "Not in a room";
    document.title = roomId ? `#${roomId} · stomprelay chat` : "stomprelay chat";
  }

  /**
   * Subscribe to the room's topic, then join it (also used to rejoin after a reconnect).
   *
   * A room this tab has been in before (its record has an epoch) is resumed with
   * x-since-offset/x-since-epoch: on a reconnect the log is still on screen; otherwise the
   * entries kept for it are shown first, under "Earlier messages". A first visit asks for
   * x-history. Either way messages up to the RECEIPT's x-offset are the replay: they go
   * above the "joined" line, and the live region waits (aria-busy) until they are in.
   */
  function enterRoom(roomId, { rejoin = false } = {}) {
    const client = chat.client;
    if (!isConnected()) return;
    if (chat.forbiddenRooms.has(roomId)) {
      status(`You may not join #${roomId}.`, "ERROR").dataset.reason = "forbidden";
      announce(`You may not join #${roomId}.`);
      return;
    }
    if (!rejoin) inbox.close();
    if (!rejoin && chat.room === roomId && chat.roomSubscription) {
      requestParticipants();
      return;
    }
    if (!rejoin && chat.room && chat.room !== roomId) leaveRoom();
    const record = roomRecord(roomId);
    record.used = Date.now();
    const resume = Boolean(record.epoch);
    if (chat.feed) endReplay(chat.feed);
    ui.messages.setAttribute("aria-busy", "true");
    if (!rejoin) {
      ui.messages.replaceChildren();
      renderParticipants([]);
      if (resume && record.entries.length) {
        addNotice("HISTORY", "Earlier messages");
        for (const entry of record.entries) {
          const headers = { "x-event-type": entry.type, "x-sender": entry.sender };
          renderRoomEvent(classify(headers, entry.body), {
            history: true,
            degraded: entry.degraded,
            offset: entry.offset,
            messageId: entry.id,
          });
        }
      }
    }
    chat.room = roomId;
    chat.resumeRoom = "";
    showRoom(roomId);
    let line = `You joined #${roomId}.`;
    if (rejoin) line = `Rejoined #${roomId}.`;
    else if (resume) line = `Back in #${roomId}.`;
    chat.receipts += 1;
    const receipt = `room-${chat.receipts}`;
    const { headers, since, sinceEpoch } = durable.subscription(record, receipt, HISTORY_SIZE);
    const feed = {
      roomId,
      record,
      seam: status(line),
      history: !resume,
      since,
      sinceEpoch,
      replaying: false,
      replayTo: 0,
      replayEpoch: "",
      firstReplayed: null,
      counting: false,
      missed: 0,
      presence: 0,
      done: false,
      timer: 0,
    };
    chat.feed = feed;
    // No RECEIPT at all (an old relay): stop waiting for a replay after a while.
    feed.timer = window.setTimeout(() => endReplay(feed), REPLAY_TIMEOUT_MS);
    client.watchForReceipt(receipt, (frame) => onRoomReceipt(feed, frame));
    chat.roomSubscription = client.subscribe(
      `/topic/room/${roomId}`,
      (message) => onRoomMessage(feed, message),
      headers,
    );
    client.publish({
      destination: `/app/room/${roomId}/join`,
      body: JSON.stringify({ username: chat.username }),
      headers: { "content-type": "application/json" },
    });
    requestParticipants();
    saveTab();
    saveRoomsSoon();
    updateControls();
    refreshRooms();
  }

  function leaveRoom() {
    const room = chat.room;
    if (!room) return;
    if (isConnected()) {
      // unsubscribe first: under a members-only ACL a feed kept past the leave is refused
      if (chat.roomSubscription) chat.roomSubscription.unsubscribe();
      chat.client.publish({ destination: `/app/room/${room}/leave`, body: "" });
    }
    if (chat.feed) endReplay(chat.feed);
    chat.feed = null;
    chat.roomSubscription = null;
    chat.room = "";
    chat.participantsAgain = false;
    showRoom("");
    renderParticipants([]);
    status(`You left #${room}.`);
    saveTab();
    saveRooms();
    updateControls();
    refreshRooms();
  }

  // -- sign-in: the relay's auth settings, tokens and their renewal ------------------------

  /** A fetch of ours gives up after 5 s (a relay that accepts and never answers). */
  function timeout() {
    return window.AbortSignal && AbortSignal.timeout ? AbortSignal.timeout(5000) : undefined;
  }

  /** GET auth/config: {required, devTokens}. A relay that has no such route signs nobody in. */
  async function loadAuthConfig() {
    try {
      const response = await fetch("auth/config", { cache: "no-store", signal: timeout() });
      if (response.ok) {
        const config = await response.json();
        chat.auth = {
          known: true,
          required: Boolean(config) && config.required === true,
          devTokens: Boolean(config) && config.devTokens === true,
        };
      } else if (!chat.auth.known) {
        chat.auth = { known: true, required: false, devTokens: false };
      }
    } catch {
      // Unreachable for now: keep what we knew (or no sign-in, for a relay never reached).
      if (!chat.auth.known) chat.auth = { known: false, required: false, devTokens: false };
    }
    showSignIn();
  }

  /** The sign-in form for the relay's mode: a username, a username (dev issuer), or a token. */
  function showSignIn() {
    const { required, devTokens } = chat.auth;
    ui.connectForm.dataset.auth = !required ? "none" : devTokens ? "dev" : "token";
    // With the dev issuer a token is optional (under "Sign in with a token you have"); without
    // it the token field is the form.
    ui.tokenSummary.hidden = !(required && devTokens);
    if (required && !devTokens) ui.tokenDetails.open = true;
    byId("username-hint").textContent = required
      ? "The development issuer signs a token for this user name."
      : "Shown to everyone in the room.";
    updateControls();
  }

  /** A pasted token without spaces or line breaks, and without a "Bearer " in front. */
  function cleanToken(text) {
    return String(text)
      .trim()
      .replace(/^bearer\s+/i, "")
      .replace(/\s+/g, "");
  }

  /**
   * A JWT's claims (its middle part, base64url JSON), or null. Not verified: the relay checks
   * the signature; the page only shows who the token names and when it runs out.
   */
  function decodeToken(token) {
    const parts = String(token).split(".");
    if (parts.length !== 3 || !parts[1]) return null;
    try {
      let base64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
      base64 += "=".repeat((4 - (base64.length % 4)) % 4);
      const bytes = Uint8Array.from(window.atob(base64), (c) => c.charCodeAt(0));
      const claims = JSON.parse(new TextDecoder().decode(bytes));
      if (!claims || typeof claims !== "object" || Array.isArray(claims)) return null;
      if (typeof claims.sub !== "string" || !clean(claims.sub)) return null;
      return claims;
    } catch {
      return null;
    }
  }

  function displayName(claims) {
    const name = typeof claims.name === "string" ? clean(claims.name) : "";
    return name || clean(claims.sub);
  }

  /** The token's exp in ms, or null when it has none. */
  function tokenExpiry(claims) {
    return claims && Number.isFinite(claims.exp) ? claims.exp * 1000 : null;
  }

  function connectHeadersFor(token, claims) {
    return { login: clean(claims.sub), passcode: token, Authorization: `Bearer ${token}` };
  }

  /** GET dev/token?user=NAME from the development issuer (a relay run with --dev-tokens). */
  async function fetchDevToken(user) {
    let response;
    try {
      response = await fetch(`dev/token?user=${encodeURIComponent(user)}`, {
        cache: "no-store",
        signal: timeout(),
      });
    } catch {
      throw new Error("The relay cannot be reached.");
    }
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (!response.ok) {
      if (response.status === 404) throw new Error("This relay has no development token issuer.");
      const why = data && typeof data.error === "string" ? `: ${clean(data.error)}` : "";
      throw new Error(`The development token issuer said no (${response.status})${why}.`);
    }
    if (!data || typeof data.token !== "string" || !data.token) {
      throw new Error("The development token issuer sent no token.");
    }
    return data.token;
  }

  /** Make `token` the one this tab signs in with (and the one a reconnect sends). */
  function adoptToken(token, claims, devIssued) {
    chat.token = token;
    chat.claims = claims;
    chat.devIssued = devIssued;
    chat.username = displayName(claims);
    chat.expiringToken = "";
    if (chat.client) chat.client.connectHeaders = connectHeadersFor(token, claims);
    ui.identityName.textContent = chat.username;
    const sub = clean(claims.sub);
    ui.identityName.dataset.sub = sub;
    ui.identitySub.textContent = chat.username === sub ? "" : `(${sub})`;
    tick();
    saveTab();
  }

  function forgetToken() {
    chat.token = "";
    chat.claims = null;
    chat.devIssued = false;
    ui.tokenExpiry.dataset.exp = "";
    ui.tokenExpiry.dataset.expiring = "false";
  }

  /**
   * Once a second while signed in with a token: say when it runs out and, in its last
   * minute, renew it from the development issuer or ask for a new one.
   */
  function tick() {
    const claims = chat.claims;
    if (!claims) return;
    const exp = tokenExpiry(claims);
    let text = "Your token does not expire.";
    let expiring = false;
    if (exp !== null) {
      const left = exp - Date.now();
      if (left <= 0) {
        text = "Your token has expired.";
        expiring = true;
      } else if (left < RENEW_BEFORE_MS) {
        text = `Your session expires in ${Math.ceil(left / 1000)} s.`;
        expiring = true;
      } else {
        text = `Your token is valid until ${formatClock(exp)}.`;
      }
    }
    ui.tokenExpiry.dataset.exp = exp === null ? "" : String(exp / 1000);
    ui.tokenExpiry.dataset.expiring = String(expiring);
    if (ui.tokenExpiry.textContent !== text) ui.tokenExpiry.textContent = text;
    updateControls();
    if (!expiring || !isConnected() || chat.renewing) return;
    if (chat.auth.devTokens && chat.autoRenewFailed !== chat.token) {
      renew({ automatic: true });
    } else if (chat.expiringToken !== chat.token) {
      chat.expiringToken = chat.token;
      announce(`${text} Paste a new token to stay connected.`);
    }
  }

  /**
   * In-band refresh: SEND the new token to /app/auth/refresh, no reconnect. The new token is
   * the pasted one, or with an empty field (and always when automatic) a new one from the
   * development issuer. It must name the same user; the relay checks the rest.
   */
  async function renew({ automatic = false } = {}) {
    if (chat.renewing || !isConnected() || !chat.claims) return;
    const client = chat.client;
    const before = chat.token;
    chat.renewing = true;
    try {
      let token = automatic ? "" : cleanToken(ui.newToken.value);
      let devIssued = false;
      if (!token) {
        if (!chat.auth.devTokens) {
          setInvalid(ui.newToken, "Paste a new token first.");
          return;
        }
        token = await fetchDevToken(clean(chat.claims.sub));
        devIssued = true;
      }
      const claims = decodeToken(token);
      if (!claims) throw new Error("that is not a token this page can read");
      if (clean(claims.sub) !== clean(chat.claims.sub)) {
        throw new Error(`that token is for ${clean(claims.sub)}, not ${clean(chat.claims.sub)}`);
      }
      const oldExp = tokenExpiry(chat.claims);
      const newExp = tokenExpiry(claims);
      if (oldExp !== null && newExp !== null && newExp <= oldExp) {
        throw new Error("that token runs out no later than the one you have");
      }
      if (chat.client !== client || !isConnected() || chat.token !== before) return;
      chat.receipts += 1;
      const receipt = `renew-${chat.receipts}`;
      client.watchForReceipt(receipt, () => {
        if (chat.client !== client || chat.token !== token) return;
        status(
          newExp === null
            ? "Session renewed."
            : `Session renewed: your token is valid until ${formatClock(newExp)}.`,
        );
      });
      client.publish({
        destination: "/app/auth/refresh",
        body: token,
        headers: { receipt, "content-type": "text/plain" },
      });
      adoptToken(token, claims, devIssued);
      ui.newToken.value = "";
      setInvalid(ui.newToken, "");
    } catch (error) {
      if (automatic) chat.autoRenewFailed = before;
      const text = `Could not renew your session: ${error.message}.`;
      status(text, "ERROR");
      announce(text);
    } finally {
      chat.renewing = false;
      tick();
    }
  }

  const SIGN_IN_REFUSALS = {
    "authentication required": ["required", "This relay needs you to sign in with a token."],
    "credential expired": ["credential-expired", "Your session has expired. Sign in again."],
    "session ended by operator": ["ended", "An operator ended your session."],
    "access refused": [
      "suspended",
      "The relay refuses you for now: an operator has suspended your account.",
    ],
  };

  /**
   * An ERROR frame in plain words: {reason, text, signIn} (signIn: the refusal ends the
   * session, back to the sign-in form), and for `forbidden` the destination and room.
   */
  function describeRefusal(message, body) {
    const said = clean(message || "");
    const key = said.toLowerCase();
    const detail = clean(body || "");
    if (Object.prototype.hasOwnProperty.call(SIGN_IN_REFUSALS, key)) {
      const [reason, text] = SIGN_IN_REFUSALS[key];
      return { reason, text, signIn: true };
    }
    if (key === "invalid token: expired") {
      const again = chat.auth.devTokens ? "Sign in again." : "Sign in with a new one.";
      return { reason: "expired", text: `Your token has expired. ${again}`, signIn: true };
    }
    if (key.startsWith("invalid token")) {
      const why = said.slice("invalid token".length).replace(/^[\s:]+/, "");
      const text = why
        ? `The relay did not accept your token (${why}).`
        : "The relay did not accept your token.";
      return { reason: "invalid", text, signIn: true };
    }
    if (key === "forbidden") {
      // The body names the destination ("alice may not subscribe to /topic/room/x."): its
      // last word that starts with a slash, without the sentence's full stop.
      const words = detail.split(/\s+/).filter((word) => word.startsWith("/"));
      const destination = (words.pop() || "").replace(/[.,;:]$/, "");
      const room = /^\/(?:topic|app)\/room\/([A-Za-z0-9_.-]{1,64})(?:\/|$)/.exec(destination);
      let text = "The relay refused that: you are not allowed.";
      if (room) text = `You may not join #${room[1]}.`;
      else if (destination) text = `You may not use ${destination}.`;
      return { reason: "forbidden", text, signIn: false, destination, room: room ? room[1] : "" };
    }
    if (key === "rate limit exceeded") {
      return {
        reason: "rate-limit",
        text: "You sent too much too fast, so the relay closed the connection. Reconnecting…",
        signIn: false,
      };
    }
    const more = detail ? ` ${detail}` : "";
    return {
      reason: "other",
      text: `The relay refused a request: ${said || "error"}.${more}`,
      signIn: false,
    };
  }

  function showLoginError(refusal) {
    ui.loginError.textContent = refusal ? refusal.text : "";
    ui.loginError.dataset.reason = refusal ? refusal.reason : "";
    ui.loginError.hidden = !refusal;
  }

  /** Leave the room on this side only (the relay is closing the session anyway). */
  function dropRoomLocally() {
    if (chat.feed) endReplay(chat.feed);
    chat.feed = null;
    chat.roomSubscription = null;
    chat.room = "";
    chat.resumeRoom = "";
    chat.participantsAgain = false;
    showRoom("");
    renderParticipants([]);
  }

  /**
   * A refusal that ends the sign-in (expired or invalid token, operator, suspension): no
   * reconnecting with the same credential; back to the sign-in form, saying why.
   */
  async function endSession(client, refusal) {
    chat.refusal = refusal;
    const room = chat.room || chat.resumeRoom;
    dropRoomLocally();
    // The next sign-in goes back to the room (unless the room is what was refused).
    if (room && refusal.room !== room) chat.resumeRoom = room;
    storageRemove(TAB_KEY);
    saveRooms();
    inbox.reset();
    forgetToken();
    if (refusal.reason === "expired" || refusal.reason === "invalid") ui.token.value = "";
    showLoginError(refusal);
    await client.deactivate();
    if (chat.client !== client) return;
    setServer("");
    chat.sessionId = "";
    setState("disconnected");
    if (chat.auth.required && !chat.auth.devTokens) ui.token.focus();
    else ui.connect.focus();
  }

  // -- the connection ----------------------------------------------------------------------

  function rememberUsername(username) {
    try {
      window.localStorage.setItem("stomprelay.username", username);
    } catch {
      // Storage may be disabled; the name is only a convenience.
    }
  }

  function signInFailed(input, reason, text) {
    if (input) setInvalid(input, text);
    else announce(text);
    showLoginError({ reason, text });
  }

  /**
   * The sign-in form's Connect: with no authentication a username (the STOMP login), as
   * ever; with it a token, pasted or (empty field, dev issuer on) fetched for the username.
   */
  async function connect() {
    if (chat.signingIn) return;
    chat.signingIn = true;
    ui.connect.disabled = true;
    try {
      await loadAuthConfig();
      showLoginError(null);
      setInvalid(ui.username, "");
      setInvalid(ui.token, "");
      chat.refusal = null;
      chat.forbidden.clear();
      chat.forbiddenRooms.clear();
      const username = clean(ui.username.value);
      if (!chat.auth.required) {
        if (!username) {
          signInFailed(ui.username, "username", "Choose a username first.");
          return;
        }
        ui.username.value = username;
        rememberUsername(username);
        openSession({ username });
        return;
      }
      let token = cleanToken(ui.token.value);
      let devIssued = false;
      if (!token) {
        if (!chat.auth.devTokens) {
          signInFailed(ui.token, "token", "Paste your token first.");
          return;
        }
        if (!username) {
          signInFailed(ui.username, "username", "Choose a username first.");
          return;
        }
        ui.username.value = username;
        rememberUsername(username);
        try {
          token = await fetchDevToken(username);
        } catch (error) {
          signInFailed(null, "issuer", error.message);
          return;
        }
        devIssued = true;
      }
      const claims = decodeToken(token);
      if (!claims) {
        signInFailed(
          ui.tokenDetails.hidden ? null : ui.token,
          "unreadable",
          "That is not a token this page can read: a JWT (three parts joined by dots) " +
            "that names a user (sub).",
        );
        return;
      }
      openSession({ token, claims, devIssued });
    } finally {
      chat.signingIn = false;
      ui.connect.disabled = !StompJs;
    }
  }

  /**
   * Before every connection attempt (reconnects, a reload): a token the development issuer
   * gave, about to run out, is replaced by a new one from it first, so the attempt is not
   * refused for an old token. A pasted token is sent as it is: the relay says if it is late.
   */
  async function freshenToken(client) {
    if (chat.client !== client || !chat.claims || !chat.devIssued || !chat.auth.devTokens) return;
    const exp = tokenExpiry(chat.claims);
    if (exp === null || exp - Date.now() >= RENEW_BEFORE_MS) return;
    try {
      const token = await fetchDevToken(clean(chat.claims.sub));
      const claims = decodeToken(token);
      if (chat.client === client && claims && clean(claims.sub) === clean(chat.claims.sub)) {
        adoptToken(token, claims, true);
      }
    } catch {
      // The issuer is unreachable too: try with the token we have; the relay says if it's late.
    }
  }

  /** Open the STOMP session: `username` (no authentication) or `token` with its claims. */
  function openSession({ username = "", token = "", claims = null, devIssued = false }) {
    const client = new StompJs.Client({
      brokerURL: brokerUrl(),
      connectHeaders: token ? connectHeadersFor(token, claims) : { login: username },
      // Reconnect by itself: after 1 s, then doubling up to 10 s.
      reconnectDelay: 1000,
      maxReconnectDelay: 10000,
      reconnectTimeMode: StompJs.ReconnectionTimeMode.EXPONENTIAL,
      connectionTimeout: 5000,
      // This page asks for 10 s heart-beats; the relay closes a peer silent for 3x that; a Worker
      // keeps our beats on time when the tab is in the background and timers are throttled.
      heartbeatIncoming: 10000,
      heartbeatOutgoing: 10000,
      heartbeatStrategy: StompJs.TickerStrategy.Worker,
      discardWebsocketOnCommFailure: true,
      beforeConnect: () => freshenToken(client),
      debug: DEBUG ? (line) => console.debug(line) : () => {},
    });

    client.onConnect = (frame) => {
      if (chat.client !== client) return;
      if (chat.sessionId) chat.pastSessions.add(chat.sessionId);
      chat.sessionId = frame.headers.session || "";
      setServer(frame.headers["x-server-id"] || "unknown");
      chat.participantsInFlight = false;
      chat.participantsAgain = false;
      showLoginError(null);
      setState("connected");
      status(
        chat.dropped
          ? `Reconnected, now on relay ${chat.serverId}.`
          : `Connected to relay ${chat.serverId} as ${chat.username}.`,
      );
      chat.dropped = false;
      if (!chat.forbidden.has("/topic/system")) {
        client.subscribe("/topic/system", (message) => {
          let text = message.body;
          try {
            const event = JSON.parse(message.body);
            if (event && typeof event.message === "string") text = event.message;
          } catch {
            // Plain-text notification.
          }
          addEntry("SYSTEM", { text });
        });
      }
      if (!chat.forbidden.has(inbox.destination)) inbox.start(client, selfUserId());
      saveTab();
      if (chat.room) {
        enterRoom(chat.room, { rejoin: true });
      } else if (chat.resumeRoom) {
        // This tab was in the room before a reload: resume it from where the tab left off.
        enterRoom(chat.resumeRoom);
        const focused = document.activeElement;
        if (focused === ui.username || focused === ui.token || focused === document.body) {
          ui.message.focus();
        }
      }
      tick();
      refreshRooms();
    };

    client.onWebSocketClose = (event) => {
      if (chat.client !== client) return;
      chat.roomSubscription = null;
      chat.participantsInFlight = false;
      inbox.stop();
      if (chat.feed) endReplay(chat.feed);
      // The close that follows an ERROR: the refusal has been shown, in words, already.
      const refused = Date.now() - chat.errorAt < 5000;
      chat.errorAt = 0;
      if (client.active) {
        if (ui.state.dataset.state === "connected" && !refused) {
          const why = event && event.code ? ` (code ${event.code})` : "";
          status(`Connection lost${why}; reconnecting…`, "ERROR");
          announce("Connection lost; reconnecting.");
        }
        ui.participants.dataset.stale = "true";
        chat.dropped = true;
        setState("reconnecting");
      } else {
        setState("disconnected");
      }
    };

    client.onStompError = (frame) => {
      if (chat.client !== client) return;
      const refusal = describeRefusal(frame.headers.message, frame.body);
      const entry = status(refusal.text, "ERROR");
      entry.dataset.reason = refusal.reason;
      announce(refusal.text);
      chat.errorAt = Date.now();
      if (refusal.reason === "forbidden" && refusal.destination) {
        // Asked again after a reconnect: the sign-in cannot do what the page needs (a
        // private message is the person's choice, and the inbox is optional: not those).
        const optional = refusal.destination.startsWith("/user/");
        const again = chat.forbidden.has(refusal.destination) && !optional;
        chat.forbidden.add(refusal.destination);
        if (refusal.room) chat.forbiddenRooms.add(refusal.room);
        inbox.refused(refusal.destination);
        if (again) refusal.signIn = true;
        else if (refusal.room && refusal.room === chat.room) dropRoomLocally();
      } else if (String(frame.body || "").includes(inbox.destination)) {
        // A relay without user destinations: no inbox on the next connections.
        chat.forbidden.add(inbox.destination);
      }
      if (refusal.signIn) endSession(client, refusal);
    };

    chat.client = client;
    chat.dropped = false;
    if (token) {
      adoptToken(token, claims, devIssued);
    } else {
      forgetToken();
      chat.username = username;
    }
    setState("connecting");
    client.activate();
    saveTab();
  }

  async function disconnect() {
    const client = chat.client;
    if (!client) return;
    if (chat.feed) endReplay(chat.feed);
    chat.feed = null;
    chat.room = "";
    chat.resumeRoom = "";
    chat.roomSubscription = null;
    // Signed out on purpose: a reload of this tab does not sign in again.
    storageRemove(TAB_KEY);
    saveRooms();
    inbox.reset();
    showRoom("");
    renderParticipants([]);
    await client.deactivate();
    if (chat.client === client) {
      forgetToken();
      setServer("");
      chat.sessionId = "";
      setState("disconnected");
      status("Disconnected.");
      ui.connect.focus();
    }
  }

  // -- wiring ------------------------------------------------------------------------------

  ui.connectForm.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!(chat.client && chat.client.active)) connect();
  });

  ui.renewForm.addEventListener("submit", (event) => {
    event.preventDefault();
    renew();
  });

  ui.disconnect.addEventListener("click", () => {
    disconnect();
  });

  ui.joinForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const roomId = ui.room.value.trim();
    if (!ROOM_ID.test(roomId)) {
      setInvalid(ui.room, "A room name is 1 to 64 letters, digits, dots, dashes or underscores.");
      return;
    }
    setInvalid(ui.room, "");
    enterRoom(roomId);
    ui.message.focus();
  });

  ui.leave.addEventListener("click", () => {
    leaveRoom();
    ui.room.focus();
  });

  ui.rooms.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-room]");
    if (!button || button.disabled) return;
    ui.room.value = button.dataset.room;
    setInvalid(ui.room, "");
    enterRoom(button.dataset.room);
    ui.message.focus();
  });

  ui.messageForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = clean(ui.message.value);
    if (!text || !isConnected() || !chat.room) return;
    chat.client.publish({
      destination: `/app/room/${chat.room}/message`,
      body: JSON.stringify({ message: text }),
      headers: { "content-type": "application/json" },
    });
    ui.message.value = "";
    ui.message.focus();
  });

  try {
    const saved = window.localStorage.getItem("stomprelay.username");
    if (saved && !ui.username.value) ui.username.value = saved;
  } catch {
    // Storage may be disabled.
  }
  if (params.get("room") && ROOM_ID.test(params.get("room"))) ui.room.value = params.get("room");

  loadRooms();
  window.addEventListener("pagehide", () => {
    saveRooms();
    inbox.save();
    saveTab();
  });

  if (!StompJs) {
    status(
      "The STOMP library did not load: run `npm ci` in web/ on the relay's host.",
      "ERROR",
    );
    ui.connect.disabled = true;
  }
  setState("disconnected");
  refreshRooms();
  chat.roomsTimer = window.setInterval(refreshRooms, ROOMS_REFRESH_MS);
  window.setInterval(tick, 1000);
  ui.username.focus();

  /** A reload of a tab that was signed in: sign in again and go back to its room. */
  async function resumeTab(tab) {
    if (typeof tab.room === "string" && ROOM_ID.test(tab.room)) {
      ui.room.value = tab.room;
      chat.resumeRoom = tab.room;
    }
    if (Array.isArray(tab.sessions)) {
      for (const session of tab.sessions) {
        if (typeof session === "string" && session) chat.pastSessions.add(session);
      }
    }
    const claims = typeof tab.token === "string" ? decodeToken(tab.token) : null;
    if (chat.auth.required && claims) {
      // The same token (freshenToken renews a dev token that is about to run out).
      openSession({ token: tab.token, claims, devIssued: tab.devIssued === true });
    } else if (chat.auth.required) {
      // Nothing to sign in with: the form, with the room remembered.
      storageRemove(TAB_KEY);
    } else {
      ui.username.value = clean(tab.username);
      connect();
    }
  }

  const tab = StompJs ? loadTab() : null;
  if (tab) ui.username.value = clean(tab.username);
  loadAuthConfig().then(() => {
    if (chat.auth.required && !chat.auth.devTokens && document.activeElement === ui.username) {
      ui.token.focus();
    }
    if (tab && !(chat.client && chat.client.active)) resumeTab(tab);
  });
})();
