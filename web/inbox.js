/*
 * stomprelay chat: private conversations (user destinations, docs/contract.md section 9).
 *
 *   SUBSCRIBE /user/queue/messages          this user's inbox: every private message, on
 *                                           every one of the user's sessions
 *   SEND      /user/{user}/queue/messages   a private message to {user} (encodeURIComponent)
 *
 * A MESSAGE in the inbox is one of three things, told apart by headers only the relay sets:
 *   - x-recipient:X           our own copy of what we sent to X (so a reload shows both sides)
 *   - x-sender:X, x-sender-session   a message from the user X
 *   - x-sender:X, no x-sender-session a message from the application's back-end (the server
 *                             API): shown with a "back-end" badge, in a conversation of its
 *                             own, so a user who calls themself "server" cannot pass for it
 *
 * The inbox is a durable log like a room's: the page keeps its position (x-epoch, x-offset)
 * and each conversation's last entries in sessionStorage, and every subscription after the
 * first (a reconnect, a relay failover, a reload) resumes with x-since-offset/x-since-epoch;
 * a first visit asks for x-history. Duplicates (same epoch:offset or message-id) are dropped.
 * What has been read is kept per user in localStorage (the offset read up to, per
 * conversation), so unread counts survive a reload and a new tab.
 *
 * Written as a factory handed what it needs (elements, helpers, callbacks): app.js owns the
 * connection and calls start/stop; this file owns the inbox and the conversation view.
 * Text that came from the network is only ever put in the page with textContent.
 */
"use strict";

(() => {
  const INBOX = "/user/queue/messages";
  /** x-history asked for on a first visit: the inbox holds every conversation. */
  const HISTORY_SIZE = 100;
  /** Entries kept per conversation in memory, and in sessionStorage for a reload. */
  const KEPT = 200;
  const STORED = 50;
  const STORED_CONVERSATIONS = 20;
  const REPLAY_TIMEOUT_MS = 5000;
  const INBOX_KEY = "stomprelay.inbox";
  const READ_KEY = "stomprelay.read.";
  const durable = window.StomprelayDurable;

  function plural(n, one, many) {
    return `${n} ${n === 1 ? one : many}`;
  }

  /** A conversation's key: people and back-ends never share one, whatever their names. */
  function keyOf(kind, name) {
    return `${kind}:${name}`;
  }

  /**
   * What an inbox MESSAGE is: {kind, peer, out}. kind "user" or "backend"; peer the other
   * side's name; out true for our own copy of a message we sent.
   */
  function classify(headers) {
    const recipient = typeof headers["x-recipient"] === "string" ? headers["x-recipient"] : "";
    const sender = typeof headers["x-sender"] === "string" ? headers["x-sender"] : "";
    const fromSession = Boolean(headers["x-sender-session"]);
    if (recipient) return { kind: "user", peer: recipient, out: true };
    if (sender && fromSession) return { kind: "user", peer: sender, out: false };
    return { kind: "backend", peer: sender || "unknown", out: false };
  }

  /** A message's text: the body, or its "message" field when it is JSON that has one. */
  function textOf(body, contentType) {
    if (String(contentType || "").startsWith("application/json")) {
      try {
        const value = JSON.parse(body);
        if (value && typeof value.message === "string") return value.message;
      } catch {
        // Not JSON after all: the body as it is.
      }
    }
    return String(body);
  }

  function create({ elements: ui, clean, announce, formatTime, storage, persistent, onView }) {
    const state = {
      user: "",
      client: null,
      subscription: null,
      connected: false,
      /** Where the page is in the inbox's log (durable.js). */
      log: durable.position(),
      /** key -> {key, kind, peer, entries, used} */
      conversations: new Map(),
      open: "",
      feed: null,
      receipts: 0,
      /** The read marks: {epoch, peers: {key: offset}} (localStorage, per user). */
      read: { epoch: "", peers: {} },
      forbiddenPeers: new Set(),
    };

    // -- storage -------------------------------------------------------------------------

    function loadRead(user) {
      try {
        const data = JSON.parse(persistent.get(READ_KEY + user) || "null");
        const peers = data && data.peers;
        if (peers && typeof peers === "object" && typeof data.epoch === "string") {
          const marks = {};
          for (const [key, offset] of Object.entries(peers)) {
            if (Number.isSafeInteger(offset) && offset >= 0) marks[key] = offset;
          }
          return { epoch: data.epoch, peers: marks };
        }
      } catch {
        // Damaged: nothing read yet.
      }
      return { epoch: "", peers: {} };
    }

    function saveRead() {
      if (state.user) persistent.set(READ_KEY + state.user, JSON.stringify(state.read));
    }

    function load(user) {
      let data = null;
      try {
        data = JSON.parse(storage.get(INBOX_KEY) || "null");
      } catch {
        data = null;
      }
      if (!data || data.user !== user || typeof data.epoch !== "string") return;
      if (!Number.isSafeInteger(data.offset) || data.offset < 0) return;
      state.log.epoch = data.epoch;
      state.log.offset = data.offset;
      const saved = Array.isArray(data.conversations) ? data.conversations : [];
      for (const item of saved) {
        if (!item || (item.kind !== "user" && item.kind !== "backend")) continue;
        if (typeof item.peer !== "string" || !item.peer) continue;
        const conversation = conversationFor(item.kind, item.peer);
        conversation.used = Number(item.used) || 0;
        const entries = Array.isArray(item.entries) ? item.entries : [];
        for (const entry of entries.slice(-STORED)) {
          if (!entry || typeof entry.text !== "string") continue;
          const restored = {
            epoch: typeof entry.epoch === "string" ? entry.epoch : "",
            offset: Number.isSafeInteger(entry.offset) ? entry.offset : null,
            id: typeof entry.id === "string" ? entry.id : "",
            text: entry.text,
            sender: typeof entry.sender === "string" ? entry.sender : "",
            out: entry.out === true,
            at: Number.isFinite(entry.at) ? entry.at : Date.now(),
            read: entry.read === true,
            degraded: entry.degraded === true,
            history: true,
          };
          conversation.entries.push(restored);
          durable.seen(state.log, restored, restored.id && seenKey(restored.id, restored.out));
        }
      }
    }

    let saveTimer = 0;
    function saveSoon() {
      if (!saveTimer) saveTimer = window.setTimeout(save, 250);
    }

    function save() {
      window.clearTimeout(saveTimer);
      saveTimer = 0;
      if (!state.user || !state.log.epoch) return;
      const kept = [...state.conversations.values()]
        .sort((a, b) => b.used - a.used)
        .slice(0, STORED_CONVERSATIONS);
      const data = (withEntries) =>
        JSON.stringify({
          user: state.user,
          epoch: state.log.epoch,
          offset: state.log.offset,
          conversations: kept.map((c) => ({
            kind: c.kind,
            peer: c.peer,
            used: c.used,
            entries: withEntries
              ? c.entries.slice(-STORED).map((e) => ({ ...e, history: undefined }))
              : [],
          })),
        });
      // Over the quota: keep the position at least (a reload then shows only what it missed).
      if (!storage.set(INBOX_KEY, data(true))) storage.set(INBOX_KEY, data(false));
    }

    // -- the model -----------------------------------------------------------------------

    function conversationFor(kind, peer) {
      const key = keyOf(kind, peer);
      let conversation = state.conversations.get(key);
      if (!conversation) {
        conversation = { key, kind, peer, entries: [], used: 0 };
        state.conversations.set(key, conversation);
      }
      return conversation;
    }

    function seenKey(id, out) {
      return `${id}|${out ? "out" : "in"}`;
    }


    function unread(conversation) {
      return conversation.entries.filter((e) => !e.out && !e.read).length;
    }

    /** Was this incoming message read already (in this tab or another, per the read marks)? */
    function readBefore(key, epoch, offset) {
      if (offset === null || !epoch || epoch !== state.read.epoch) return false;
      const mark = state.read.peers[key];
      return Number.isSafeInteger(mark) && offset <= mark;
    }

    /** Everything in this conversation is read: its entries, and the mark for other tabs. */
    function markRead(conversation) {
      let changed = false;
      for (const entry of conversation.entries) {
        if (!entry.read) {
          entry.read = true;
          changed = true;
        }
        if (entry.out || entry.offset === null || entry.epoch !== state.log.epoch) continue;
        if (state.read.epoch !== state.log.epoch) {
          state.read = { epoch: state.log.epoch, peers: {} };
        }
        const mark = state.read.peers[conversation.key] ?? -1;
        if (entry.offset > mark) {
          state.read.peers[conversation.key] = entry.offset;
          changed = true;
        }
      }
      if (changed) {
        saveRead();
        saveSoon();
      }
    }

    /** Put an entry in its place: by offset within one epoch, else at the end. */
    function insert(conversation, entry) {
      const list = conversation.entries;
      let at = list.length;
      if (entry.offset !== null) {
        while (
          at > 0 &&
          list[at - 1].offset !== null &&
          list[at - 1].epoch === entry.epoch &&
          list[at - 1].offset > entry.offset
        ) {
          at -= 1;
        }
      }
      list.splice(at, 0, entry);
      if (list.length > KEPT) list.splice(0, list.length - KEPT);
      conversation.used = Math.max(conversation.used, entry.at);
    }

    // -- the subscription ----------------------------------------------------------------

    function onMessage(feed, message) {
      if (feed !== state.feed) return;
      const headers = message.headers;
      const place = durable.placeOf(headers);
      const { epoch, offset, id } = place;
      if (Object.prototype.hasOwnProperty.call(headers, "x-gap")) {
        onGap(headers["x-gap"], epoch, id);
        return;
      }
      const { kind, peer, out } = classify(headers);
      const idKey = id && seenKey(id, out);
      const duplicate = durable.isDuplicate(state.log, place, idKey);
      if (feed.replaying && offset !== null && offset >= feed.replayTo) endReplay(feed);
      if (duplicate) return;
      durable.note(state.log, place, idKey);
      const conversation = conversationFor(kind, clean(peer) || "unknown");
      const isOpen = conversation.key === state.open && !ui.conversation.hidden;
      const entry = {
        epoch,
        offset,
        id,
        text: textOf(message.body, headers["content-type"]),
        sender: clean(headers["x-sender"] || ""),
        out,
        at: Date.now(),
        read: out || isOpen || readBefore(conversation.key, epoch, offset),
        degraded: headers["x-degraded"] === "true",
        history: false,
      };
      insert(conversation, entry);
      if (isOpen) {
        markRead(conversation);
        renderConversation();
      } else if (!entry.read) {
        const from = kind === "backend" ? `the back-end (${conversation.peer})` : conversation.peer;
        announce(`New private message from ${from}.`);
      }
      renderList();
      saveSoon();
    }

    /** x-gap on the inbox: some private messages were trimmed (or the log was reset). */
    function onGap(value, epoch, id) {
      const idKey = id && seenKey(id, false);
      if (durable.isDuplicate(state.log, { epoch: "", offset: null }, idKey)) return;
      durable.seen(state.log, { epoch: "", offset: null }, idKey);
      const { reset, count } = durable.gap(state.log, value, epoch);
      let text = "Some private messages could not be recovered.";
      if (reset) text = "Your private messages' history was reset.";
      else if (count !== null) {
        text = `${plural(count, "private message", "private messages")} could not be recovered.`;
      }
      showNotice(text, "gap");
      saveSoon();
    }

    function onReceipt(feed, frame) {
      if (feed !== state.feed) return;
      const found = durable.receipt(state.log, feed, frame.headers);
      if (found.unrecovered) {
        showNotice("Some private messages could not be recovered.", "unrecovered");
      }
      if (found.moved) saveSoon();
      if (found.replayTo !== null) {
        feed.replaying = true;
        feed.replayTo = found.replayTo;
      } else {
        endReplay(feed);
      }
    }

    function endReplay(feed) {
      if (feed.done) return;
      feed.done = true;
      feed.replaying = false;
      window.clearTimeout(feed.timer);
      ui.list.removeAttribute("aria-busy");
    }

    /**
     * Subscribe to the inbox on a new connection (the first, a reconnect, a failover, a
     * reload): resume from the position this tab has, or ask for the recent history.
     */
    function start(client, user) {
      if (state.user !== user) {
        reset();
        state.user = user;
        state.read = loadRead(user);
        load(user);
      }
      state.client = client;
      if (state.feed) endReplay(state.feed);
      state.receipts += 1;
      const receipt = `inbox-${state.receipts}`;
      const { headers, since, sinceEpoch } = durable.subscription(state.log, receipt, HISTORY_SIZE);
      const feed = {
        since,
        sinceEpoch,
        replaying: false,
        replayTo: 0,
        done: false,
        timer: 0,
      };
      state.feed = feed;
      ui.list.setAttribute("aria-busy", "true");
      feed.timer = window.setTimeout(() => endReplay(feed), REPLAY_TIMEOUT_MS);
      client.watchForReceipt(receipt, (frame) => onReceipt(feed, frame));
      state.subscription = client.subscribe(INBOX, (message) => onMessage(feed, message), headers);
      ui.panel.dataset.inbox = "subscribed";
      renderList();
      if (state.open) renderConversation();
    }

    /** The connection is gone (a drop: stompjs reconnects and start runs again). */
    function stop() {
      state.subscription = null;
      if (state.feed) endReplay(state.feed);
      ui.panel.dataset.inbox = "";
    }

    /** Signed out, or another user signs in: forget this user's inbox on the page. */
    function reset() {
      save();
      stop();
      state.feed = null;
      state.user = "";
      state.client = null;
      state.log = durable.position();
      state.conversations.clear();
      state.forbiddenPeers.clear();
      state.read = { epoch: "", peers: {} };
      close();
      showNotice("", "");
      renderList();
    }

    // -- the view --------------------------------------------------------------------------

    function showNotice(text, reason) {
      ui.notice.textContent = text;
      ui.notice.dataset.reason = reason;
      ui.notice.hidden = !text;
      if (text) announce(text);
    }

    function renderList() {
      const conversations = [...state.conversations.values()]
        .filter((c) => c.entries.length || c.key === state.open)
        .sort((a, b) => b.used - a.used || a.peer.localeCompare(b.peer));
      const items = conversations.map((conversation) => {
        const item = document.createElement("li");
        const button = document.createElement("button");
        button.type = "button";
        button.className = "conversation-link";
        button.dataset.peer = conversation.peer;
        button.dataset.kind = conversation.kind;
        if (conversation.key === state.open && !ui.conversation.hidden) {
          button.setAttribute("aria-current", "true");
        }
        const name = document.createElement("span");
        name.className = "peer-name";
        name.textContent = conversation.peer;
        button.append(name);
        if (conversation.kind === "backend") button.append(backendBadge());
        const n = unread(conversation);
        const count = document.createElement("span");
        count.className = "count unread";
        count.dataset.unread = String(n);
        count.textContent = String(n);
        count.hidden = n === 0;
        button.dataset.unread = String(n);
        const label =
          conversation.kind === "backend" ? `${conversation.peer} (back-end)` : conversation.peer;
        const unreadText = plural(n, "unread message", "unread messages");
        button.setAttribute("aria-label", n ? `${label}, ${unreadText}` : label);
        button.append(count);
        item.append(button);
        return item;
      });
      ui.list.replaceChildren(...items);
      ui.empty.hidden = items.length > 0;
      const total = conversations.reduce((sum, c) => sum + unread(c), 0);
      ui.total.textContent = String(total);
      ui.total.dataset.unread = String(total);
      ui.total.hidden = total === 0;
      decorate();
    }

    /** The participant list's people get their conversation's unread count beside them. */
    function decorate() {
      for (const item of ui.participants.querySelectorAll("li[data-user-id]")) {
        const conversation = state.conversations.get(keyOf("user", item.dataset.userId));
        const n = conversation ? unread(conversation) : 0;
        let count = item.querySelector(".unread");
        if (!count && n) {
          count = document.createElement("span");
          count.className = "count unread";
          const name = item.querySelector(".name");
          (name || item).after(count);
        }
        if (count) {
          count.textContent = String(n);
          count.dataset.unread = String(n);
          count.title = plural(n, "unread private message", "unread private messages");
          count.hidden = n === 0;
        }
      }
    }

    function backendBadge() {
      const badge = document.createElement("span");
      badge.className = "backend";
      badge.textContent = "back-end";
      badge.title = "Sent by the application's server, not by a person.";
      return badge;
    }

    function renderEntry(conversation, entry) {
      const item = document.createElement("li");
      item.className = `entry entry-dm${entry.out ? " own" : ""}`;
      item.dataset.type = "DM";
      item.dataset.direction = entry.out ? "out" : "in";
      if (entry.offset !== null) item.dataset.offset = String(entry.offset);
      if (entry.id) item.dataset.messageId = entry.id;
      if (entry.history) item.dataset.history = "true";
      const backend = !entry.out && conversation.kind === "backend";
      if (backend) item.dataset.backend = "true";
      const meta = document.createElement("div");
      meta.className = "meta";
      const who = document.createElement("span");
      who.className = "author";
      who.textContent = entry.out ? entry.sender || state.user : conversation.peer;
      meta.append(who);
      if (backend) meta.append(backendBadge());
      const when = document.createElement("time");
      const date = new Date(entry.at);
      when.dateTime = date.toISOString();
      when.textContent = formatTime(entry.at);
      meta.append(when);
      if (entry.degraded) {
        const mark = document.createElement("span");
        mark.className = "degraded";
        mark.textContent = "not synced";
        meta.append(mark);
      }
      const body = document.createElement("p");
      body.className = "text";
      body.textContent = entry.text;
      item.append(meta, body);
      return item;
    }

    function renderConversation() {
      const conversation = state.conversations.get(state.open);
      if (!conversation) return;
      const log = ui.log;
      const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
      log.replaceChildren(...conversation.entries.map((e) => renderEntry(conversation, e)));
      if (atBottom || conversation.entries.at(-1)?.out) log.scrollTop = log.scrollHeight;
      updateControls();
    }

    function updateControls() {
      const conversation = state.conversations.get(state.open);
      const backend = Boolean(conversation) && conversation.kind === "backend";
      const refused = Boolean(conversation) && state.forbiddenPeers.has(conversation.peer);
      ui.input.disabled = !conversation || backend || refused;
      ui.send.disabled = !(state.connected && conversation && !backend && !refused);
      ui.readOnly.hidden = !backend;
    }

    /** Open the conversation with a user ("user") or a back-end ("backend"). */
    function open(peer, kind = "user") {
      const name = clean(peer);
      if (!name) return;
      const conversation = conversationFor(kind, name);
      state.open = conversation.key;
      ui.heading.textContent = name;
      ui.heading.dataset.peer = name;
      ui.heading.dataset.kind = kind;
      ui.headingBadge.hidden = kind !== "backend";
      onView("conversation");
      markRead(conversation);
      renderConversation();
      renderList();
      if (!ui.input.disabled) ui.input.focus();
    }

    /** Back to the room: the conversation stays in the list. */
    function close() {
      if (!state.open && ui.conversation.hidden) return;
      state.open = "";
      ui.log.replaceChildren();
      onView("room");
      renderList();
    }

    function send(text) {
      const conversation = state.conversations.get(state.open);
      if (!conversation || conversation.kind !== "user" || !state.connected || !state.client) {
        return false;
      }
      state.client.publish({
        destination: `/user/${encodeURIComponent(conversation.peer)}/queue/messages`,
        body: text,
        headers: { "content-type": "text/plain" },
      });
      return true;
    }

    /** A SEND to this user was refused (ACL): no composer for them on this sign-in. */
    function refused(destination) {
      const match = /^\/user\/([^/]+)\/queue\//.exec(destination);
      if (!match) return;
      try {
        state.forbiddenPeers.add(decodeURIComponent(match[1]));
      } catch {
        // Not percent-encoding we made: nothing to mark.
      }
      updateControls();
    }

    function setConnected(connected) {
      state.connected = connected;
      for (const button of ui.participants.querySelectorAll("button.dm-open")) {
        button.disabled = !connected;
      }
      updateControls();
    }

    // -- wiring ----------------------------------------------------------------------------

    ui.list.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-peer]");
      if (button) open(button.dataset.peer, button.dataset.kind);
    });

    ui.participants.addEventListener("click", (event) => {
      const button = event.target.closest("button.dm-open[data-user-id]");
      if (button && !button.disabled) open(button.dataset.userId, "user");
    });

    ui.back.addEventListener("click", () => close());

    ui.form.addEventListener("submit", (event) => {
      event.preventDefault();
      const text = clean(ui.input.value);
      if (!text) return;
      if (send(text)) {
        ui.input.value = "";
        ui.input.focus();
      }
    });

    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "hidden") save();
    });

    renderList();
    return {
      state,
      start,
      stop,
      reset,
      open,
      close,
      refused,
      setConnected,
      decorate,
      save,
      destination: INBOX,
      unread: (peer, kind = "user") => {
        const conversation = state.conversations.get(keyOf(kind, peer));
        return conversation ? unread(conversation) : 0;
      },
    };
  }

  window.StomprelayInbox = { create, classify };
})();
