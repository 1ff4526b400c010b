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
   * Append one entry: type is CHAT, JOIN, LEAVE, SYSTEM, STATUS or ERROR.
   * Every string goes in through textContent.
   */
  function addEntry(type, { author = "", text = "", timestamp, sessionId = "", serverId = "" }) {
    const item = document.createElement("li");
    item.className = `entry entry-${type.toLowerCase()}`;
    item.dataset.type = type;
    if (sessionId) item.dataset.sessionId = sessionId;
    if (serverId) item.dataset.serverId = serverId;
    if (sessionId && sessionId === chat.sessionId) item.classList.add("own");

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

    const body = document.createElement("p");
    body.className = "text";
    body.textContent = text;
    item.append(meta, body);

    const log = ui.messages;
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    log.append(item);
    while (log.children.length > MAX_MESSAGES) log.firstElementChild.remove();
    if (atBottom || sessionId === chat.sessionId) log.scrollTop = log.scrollHeight;
  }

  function status(text, type = "STATUS") {
    addEntry(type, { text });
  }

  const LEAVE_REASONS = {
    left: "",
    disconnected: " (disconnected)",
    "server-lost": " (their relay went away)",
  };

  function onRoomMessage(roomId, message) {
    if (roomId !== chat.room) return;
    let event = null;
    try {
      event = JSON.parse(message.body);
    } catch {
      event = null;
    }
    if (!event || typeof event !== "object" || typeof event.type !== "string") {
      // Something published straight to /topic/room/{id} by another kind of client.
      addEntry("CHAT", { author: "(raw message)", text: message.body });
      return;
    }
    const who = typeof event.username === "string" && event.username ? event.username : "someone";
    const details = {
      timestamp: event.timestamp,
      sessionId: event.sessionId,
      serverId: event.serverId,
    };
    switch (event.type) {
      case "CHAT":
        addEntry("CHAT", { ...details, author: who, text: String(event.message ?? "") });
        break;
      case "JOIN":
        addEntry("JOIN", { ...details, text: `${who} joined` });
        requestParticipants();
        refreshRooms();
        break;
      case "LEAVE":
        if (chat.pastSessions.has(event.sessionId)) {
          // Our connection from before a reconnect, cleaned up by the cluster.
          const where = event.serverId ? ` on ${event.serverId}` : "";
          const why = event.reason === "server-lost" ? ": that relay went away" : "";
          addEntry("LEAVE", {
            ...details,
            text: `Your previous connection${where} left the room${why}`,
          });
        } else {
          addEntry("LEAVE", { ...details, text: `${who} left${LEAVE_REASONS[event.reason] ?? ""}` });
        }
        requestParticipants();
        refreshRooms();
        break;
      case "SYSTEM":
        addEntry("SYSTEM", { ...details, text: String(event.message ?? "System message") });
        break;
      default:
        addEntry("CHAT", { ...details, author: who, text: String(event.message ?? message.body) });
    }
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

  /** Subscribe to the room's topic, then join it (also used to rejoin after a reconnect). */
  function enterRoom(roomId, { rejoin = false } = {}) {
    const client = chat.client;
    if (!isConnected()) return;
    if (!rejoin && chat.room === roomId && chat.roomSubscription) {
      requestParticipants();
      return;
    }
    if (!rejoin && chat.room && chat.room !== roomId) leaveRoom();
    if (!rejoin) {
      ui.messages.replaceChildren();
      renderParticipants([]);
    }
    chat.room = roomId;
    showRoom(roomId);
    chat.roomSubscription = client.subscribe(`/topic/room/${roomId}`, (message) =>
      onRoomMessage(roomId, message),
    );
    client.publish({
      destination: `/app/room/${roomId}/join`,
      body: JSON.stringify({ username: chat.username }),
      headers: { "content-type": "application/json" },
    });
    requestParticipants();
    status(rejoin ? `Rejoined #${roomId}.` : `You joined #${roomId}.`);
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
    chat.roomSubscription = null;
    chat.room = "";
    chat.participantsAgain = false;
    showRoom("");
    renderParticipants([]);
    status(`You left #${room}.`);
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
      // The relay offers 10 s heart-beats and closes a peer silent for 3x that; a Worker
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
      if (chat.room) enterRoom(chat.room, { rejoin: true });
      refreshRooms();
    };

    client.onWebSocketClose = (event) => {
      if (chat.client !== client) return;
      chat.roomSubscription = null;
      chat.participantsInFlight = false;
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
  }

  async function disconnect() {
    const client = chat.client;
    if (!client) return;
    chat.room = "";
    chat.roomSubscription = null;
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
})();
