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
  const ROOM_ID = /^[A-Za-z0-9_.-]{1,64}$/;
  // Control characters the relay refuses in usernames and messages (all but \t and \n).
  const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g;
  const MAX_MESSAGES = 500;
  const ROOMS_REFRESH_MS = 5000;
  /** x-history asked for on a first visit to a room, and entries kept per room for a reload. */
  const HISTORY_SIZE = 50;
  /** Rooms whose position and entries are kept in sessionStorage (the most recently used). */
  const STORED_ROOMS = 10;
  /** (epoch, offset) keys and message-ids remembered per room to drop duplicates. */
  const MAX_SEEN = 5000;
  /** How long to wait for the replayed messages a RECEIPT announced before giving up. */
  const REPLAY_TIMEOUT_MS = 5000;
  const ROOMS_KEY = "stomprelay.rooms";
  const TAB_KEY = "stomprelay.tab";
  const params = new URLSearchParams(window.location.search);
  const DEBUG = params.has("debug");

  const byId = (id) => document.getElementById(id);
  const ui = {
    state: byId("state"),
    serverId: byId("server-id"),
    connectForm: byId("connect-form"),
    username: byId("username"),
    connect: byId("connect"),
    disconnect: byId("disconnect"),
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
    ui.username.disabled = active;
    ui.connect.hidden = active;
    ui.disconnect.hidden = !active;
    ui.join.disabled = !connected;
    ui.leave.disabled = !(connected && chat.room);
    ui.message.disabled = !chat.room;
    ui.send.disabled = !(connected && chat.room);
    for (const button of ui.rooms.querySelectorAll("button")) {
      button.disabled = !connected;
    }
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
    },
  ) {
    const item = document.createElement("li");
    item.className = `entry entry-${type.toLowerCase()}`;
    item.dataset.type = type;
    if (sessionId) item.dataset.sessionId = sessionId;
    if (serverId) item.dataset.serverId = serverId;
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

  function parseEvent(body) {
    try {
      const event = JSON.parse(body);
      return event && typeof event === "object" && typeof event.type === "string" ? event : null;
    } catch {
      return null;
    }
  }

  /**
   * Show one room event (parsed body, or null for a body that is not one); `where` holds
   * addEntry's placement and history options. Returns [kind, entry]: kind is "message"
   * (CHAT, SYSTEM and anything else people wrote) or "presence" (JOIN, LEAVE).
   */
  function renderRoomEvent(event, body, where) {
    if (!event) {
      // Something published straight to /topic/room/{id} by another kind of client.
      return ["message", addEntry("CHAT", { ...where, author: "(raw message)", text: body })];
    }
    const who = typeof event.username === "string" && event.username ? event.username : "someone";
    const details = {
      ...where,
      timestamp: event.timestamp,
      sessionId: typeof event.sessionId === "string" ? event.sessionId : "",
      serverId: typeof event.serverId === "string" ? event.serverId : "",
    };
    switch (event.type) {
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

  const OFFSET = /^\d{1,15}$/;

  function parseOffset(value) {
    return typeof value === "string" && OFFSET.test(value) ? Number(value) : null;
  }

  function addCapped(set, value) {
    set.add(value);
    if (set.size > MAX_SEEN) set.delete(set.values().next().value);
  }

  /** What the page knows of one room's log: where it is in it, and what it showed. */
  function roomRecord(roomId) {
    let record = chat.history.get(roomId);
    if (!record) {
      record = { epoch: "", offset: 0, entries: [], keys: new Set(), ids: new Set(), used: 0 };
      chat.history.set(roomId, record);
    }
    return record;
  }

  /** Note a shown MESSAGE: its key and id (duplicates), the position, the entry (a reload). */
  function remember(record, { epoch, offset, id, degraded, body }) {
    if (epoch && offset !== null) {
      addCapped(record.keys, `${epoch}:${offset}`);
      if (epoch !== record.epoch) {
        record.epoch = epoch;
        record.offset = offset;
      } else if (offset > record.offset) {
        record.offset = offset;
      }
    }
    if (id) addCapped(record.ids, id);
    record.entries.push({ epoch, offset, id, degraded, body });
    const extra = record.entries.length - HISTORY_SIZE;
    if (extra > 0) record.entries.splice(0, extra);
    saveRoomsSoon();
  }

  function onRoomMessage(feed, message) {
    if (feed !== chat.feed || feed.roomId !== chat.room) return;
    const headers = message.headers;
    const record = feed.record;
    const offset = parseOffset(headers["x-offset"]);
    const epoch = headers["x-epoch"] || "";
    const id = headers["message-id"] || "";
    const degraded = headers["x-degraded"] === "true";

    if (Object.prototype.hasOwnProperty.call(headers, "x-gap")) {
      onGap(feed, headers["x-gap"], epoch, id);
      return;
    }
    const event = parseEvent(message.body);
    if (headers["x-sync"] === "true" || (event && event.type === "SYNC")) {
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
    const duplicate =
      (epoch && offset !== null && record.keys.has(`${epoch}:${offset}`)) ||
      (id && record.ids.has(id));
    if (!duplicate) {
      const replayed = feed.replaying && offset !== null;
      if (replayed && feed.history && !feed.firstReplayed) {
        // A first visit: the room's recent history, above the line saying we joined.
        feed.firstReplayed = addNotice("HISTORY", "Earlier messages", { before: feed.seam });
      }
      const [kind, item] = renderRoomEvent(event, message.body, {
        before: replayed ? feed.seam : null,
        history: replayed,
        degraded,
        offset,
        messageId: id,
      });
      remember(record, { epoch, offset, id, degraded, body: message.body });
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
    if (id && record.ids.has(id)) return;
    if (id) addCapped(record.ids, id);
    let text = "Some messages could not be recovered";
    let count = null;
    let reason = "gap";
    const range = /^(\d{1,15})-(\d{1,15})$/.exec(String(value).trim());
    if (String(value).trim() === "reset") {
      text = "The room's history was reset";
      reason = "reset";
      if (epoch) record.epoch = epoch;
      record.offset = 0;
    } else if (range) {
      const from = Number(range[1]);
      const to = Number(range[2]);
      if (to >= from) {
        count = to - from + 1;
        text = `${plural(count, "message", "messages")} could not be recovered`;
      }
      if (!record.epoch && epoch) record.epoch = epoch;
      if ((!epoch || epoch === record.epoch) && to > record.offset) record.offset = to;
    }
    addNotice("GAP", text, { before: feed.replaying ? feed.seam : null, count, reason });
    announce(text);
    saveRoomsSoon();
  }

  /** The SUBSCRIBE's RECEIPT: where the log is now, and whether everything we missed is coming. */
  function onRoomReceipt(feed, frame) {
    if (feed !== chat.feed) return;
    const headers = frame.headers;
    const record = feed.record;
    const last = parseOffset(headers["x-offset"]);
    const epoch = headers["x-epoch"] || "";
    if (feed.since !== null && headers["x-recovered"] === "false") {
      const text = "Some messages could not be recovered";
      addNotice("GAP", text, { before: feed.seam, reason: "unrecovered" });
      announce(text);
    } else if (feed.since !== null) {
      feed.counting = true;
    }
    if (last === null) {
      // This destination has no log (history off, or no Redis): everything is live.
      endReplay(feed);
      return;
    }
    const sameEpoch = Boolean(epoch) && epoch === feed.sinceEpoch;
    if (epoch && epoch !== record.epoch) {
      // A new history (or our first look at this one): positions restart.
      record.epoch = epoch;
      record.offset = 0;
      saveRoomsSoon();
    }
    const from = feed.since !== null && sameEpoch ? feed.since : 0;
    if (last > from) {
      feed.replaying = true;
      feed.replayTo = last;
      feed.replayEpoch = epoch;
      window.clearTimeout(feed.timer);
      feed.timer = window.setTimeout(() => endReplay(feed), REPLAY_TIMEOUT_MS);
    } else {
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

  function storageGet(key) {
    try {
      return window.sessionStorage.getItem(key);
    } catch {
      return null;
    }
  }

  function storageSet(key, value) {
    try {
      window.sessionStorage.setItem(key, value);
      return true;
    } catch {
      return false;
    }
  }

  function storageRemove(key) {
    try {
      window.sessionStorage.removeItem(key);
    } catch {
      // Storage may be disabled.
    }
  }

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
        };
        record.entries.push(restored);
        if (restored.epoch && restored.offset !== null) {
          addCapped(record.keys, `${restored.epoch}:${restored.offset}`);
        }
        if (restored.id) addCapped(record.ids, restored.id);
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
    storageSet(
      TAB_KEY,
      JSON.stringify({
        username: chat.username,
        room: chat.room || chat.resumeRoom,
        sessions: sessions.slice(-20),
      }),
    );
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

  // -- participants ------------------------------------------------------------------------

  function renderParticipants(people) {
    const items = people.map((person) => {
      const item = document.createElement("li");
      const username = String(person.username ?? "");
      item.dataset.username = username;
      item.dataset.sessionId = String(person.sessionId ?? "");
      item.dataset.serverId = String(person.serverId ?? "");
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = username;
      item.append(name);
      if (person.sessionId === chat.sessionId) {
        item.classList.add("own");
        const you = document.createElement("span");
        you.className = "you";
        you.textContent = " (you)";
        name.append(you);
      }
      const where = document.createElement("span");
      where.className = "where";
      where.textContent = person.serverId ? `on ${person.serverId}` : "";
      item.append(where);
      return item;
    });
    ui.participants.replaceChildren(...items);
    ui.participants.removeAttribute("data-stale");
    ui.participantCount.textContent = String(people.length);
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
          renderRoomEvent(parseEvent(entry.body), entry.body, {
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
    const feed = {
      roomId,
      record,
      seam: status(line),
      history: !resume,
      since: resume ? record.offset : null,
      sinceEpoch: resume ? record.epoch : "",
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
    chat.receipts += 1;
    const receipt = `room-${chat.receipts}`;
    const headers = { receipt };
    if (resume) {
      headers["x-since-offset"] = String(record.offset);
      headers["x-since-epoch"] = record.epoch;
    } else {
      headers["x-history"] = String(HISTORY_SIZE);
    }
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
      chat.client.publish({ destination: `/app/room/${room}/leave`, body: "" });
      if (chat.roomSubscription) chat.roomSubscription.unsubscribe();
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

  // -- the connection ----------------------------------------------------------------------

  function connect() {
    const username = clean(ui.username.value);
    if (!username) {
      setInvalid(ui.username, "Choose a username first.");
      return;
    }
    setInvalid(ui.username, "");
    ui.username.value = username;
    chat.username = username;
    try {
      window.localStorage.setItem("stomprelay.username", username);
    } catch {
      // Storage may be disabled; the name is only a convenience.
    }

    const client = new StompJs.Client({
      brokerURL: brokerUrl(),
      connectHeaders: { login: username },
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
      debug: DEBUG ? (line) => console.debug(line) : () => {},
    });

    client.onConnect = (frame) => {
      if (chat.client !== client) return;
      if (chat.sessionId) chat.pastSessions.add(chat.sessionId);
      chat.sessionId = frame.headers.session || "";
      setServer(frame.headers["x-server-id"] || "unknown");
      chat.participantsInFlight = false;
      chat.participantsAgain = false;
      setState("connected");
      status(
        chat.dropped
          ? `Reconnected, now on relay ${chat.serverId}.`
          : `Connected to relay ${chat.serverId} as ${chat.username}.`,
      );
      chat.dropped = false;
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
      saveTab();
      if (chat.room) {
        enterRoom(chat.room, { rejoin: true });
      } else if (chat.resumeRoom) {
        // This tab was in the room before a reload: resume it from where the tab left off.
        enterRoom(chat.resumeRoom);
        if (document.activeElement === ui.username || document.activeElement === document.body) {
          ui.message.focus();
        }
      }
      refreshRooms();
    };

    client.onWebSocketClose = (event) => {
      if (chat.client !== client) return;
      chat.roomSubscription = null;
      chat.participantsInFlight = false;
      if (chat.feed) endReplay(chat.feed);
      if (client.active) {
        if (ui.state.dataset.state === "connected") {
          const why = event && event.code ? ` (code ${event.code})` : "";
          status(`Connection lost${why}; reconnecting…`, "ERROR");
          announce("Connection lost; reconnecting.");
          ui.participants.dataset.stale = "true";
        }
        chat.dropped = true;
        setState("reconnecting");
      } else {
        setState("disconnected");
      }
    };

    client.onStompError = (frame) => {
      if (chat.client !== client) return;
      const reason = frame.headers.message || "error";
      const detail = frame.body ? ` ${frame.body}` : "";
      status(`The relay refused a request: ${reason}.${detail}`, "ERROR");
      announce(`Error: ${reason}`);
    };

    chat.client = client;
    chat.dropped = false;
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
    showRoom("");
    renderParticipants([]);
    await client.deactivate();
    if (chat.client === client) {
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
  ui.username.focus();

  // A reload of a tab that was signed in: sign in again and go back to its room.
  const tab = StompJs ? loadTab() : null;
  if (tab) {
    ui.username.value = clean(tab.username);
    if (typeof tab.room === "string" && ROOM_ID.test(tab.room)) {
      ui.room.value = tab.room;
      chat.resumeRoom = tab.room;
    }
    if (Array.isArray(tab.sessions)) {
      for (const session of tab.sessions) {
        if (typeof session === "string" && session) chat.pastSessions.add(session);
      }
    }
    connect();
  }
})();
