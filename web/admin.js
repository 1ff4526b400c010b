// stomprelay admin: the operators' dashboard (docs/operations.md).
//
// Reads the relay's admin API (/api/dashboard/*, /api/rooms and /api/sessions with
// ?q=&offset=&limit=, /api/rooms/{id}, /api/history, /api/users/{user}) and acts
// through the existing routes (notify, kick, lift, disconnect), each after a
// confirmation. Lists are searched and paged by the relay: the page asks only for
// the rows it shows. The admin token lives in this tab's sessionStorage and travels
// as a Bearer token, never in a URL. Charts are plain SVG.
"use strict";

(() => {
  // the directory the page is served from, always one leading slash: "//x/" would make
  // ROOT + "api/..." a network-path reference to another host (with the token)
  const ROOT = location.pathname.replace(/admin(\.html)?$/, "").replace(/^\/+/, "/");
  const TOKEN_KEY = "stomprelay.adminToken";
  const PAGE_SIZE = 25;
  const OVERVIEW_ROOMS = 10;
  const REFRESH_MS = 2000;
  // the room lists, and a room's page, refresh less often than the relays
  const ROOMS_REFRESH_MS = 6000;
  const MESSAGES_SHOWN = 20;
  const SVG = "http://www.w3.org/2000/svg";
  const COLOURS = ["#1d4ed8", "#b45309", "#047857", "#7c3aed", "#be123c", "#0e7490", "#4d7c0f"];
  const CHARTS = [
    { key: "connections", title: "Connections", unit: "" },
    { key: "sends", title: "SENDs per second", unit: "/s" },
    { key: "deliveries", title: "Deliveries per second", unit: "/s" },
    { key: "rttMs", title: "Redis round trip", unit: " ms" },
    { key: "degraded", title: "Degraded seconds per sample", unit: " s" },
  ];

  const $ = (id) => document.getElementById(id);
  // adminToken: whether the relay has an admin token (null until its servers view says)
  const state = { route: { view: "overview" }, busy: false, canAct: false, relays: [], roomsAt: 0, roomAt: 0, adminToken: null };
  const NEEDS_ADMIN_TOKEN = "This view needs the admin token, and this relay has none: start it with --admin-token.";

  class SignInNeeded extends Error {}

  // -- small helpers ---------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "text") node.textContent = String(value);
      else if (name === "onclick") node.addEventListener("click", value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function ago(ms) {
    if (!ms) return "never";
    const s = Math.round((Date.now() - ms) / 1000);
    if (s < 0) return `in ${duration(-s)}`;
    if (s < 2) return "just now";
    return `${duration(s)} ago`;
  }

  function duration(seconds) {
    const s = Math.round(seconds);
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60 ? `${s % 60} s` : ""}`.trim();
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  }

  function stamp(ms) {
    return ms ? new Date(ms).toLocaleString() : "";
  }

  function number(value, unit = "") {
    if (value === null || value === undefined) return "–";
    const n = Number(value);
    const shown = Math.abs(n) >= 100 || Number.isInteger(n) ? Math.round(n) : n.toFixed(1);
    return `${shown}${unit}`;
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }

  function showError(message) {
    const box = $("error");
    box.textContent = message || "";
    box.hidden = !message;
  }

  function toast(message) {
    const box = $("toast");
    box.textContent = message;
    box.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => (box.hidden = true), 5000);
  }

  async function api(path, method = "GET", body = undefined) {
    const headers = { accept: "application/json" };
    if (token()) headers.authorization = `Bearer ${token()}`;
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(ROOT + path, init);
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (response.status === 401) {
      // with no admin token on the relay no token signs in (the API key is not one):
      // the view says what it needs instead of asking for a token
      if (state.adminToken === false) throw new Error(NEEDS_ADMIN_TOKEN);
      signedOut(token() ? "That token was refused." : "");
      throw new SignInNeeded();
    }
    if (!response.ok) {
      throw new Error((data && data.error) || `HTTP ${response.status}`);
    }
    return data;
  }

  function query(params) {
    const parts = Object.entries(params)
      .filter(([, v]) => v !== undefined && v !== null)
      .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`);
    return parts.length ? `?${parts.join("&")}` : "";
  }

  // -- access -------------------------------------------------------------------

  function signedOut(reason) {
    sessionStorage.removeItem(TOKEN_KEY);
    $("sign-in").hidden = false;
    $("main").hidden = true;
    setAccess("signed-out", "signed out");
    if (reason) showError(reason);
  }

  function setAccess(kind, text) {
    const access = $("access");
    access.dataset.access = kind;
    access.textContent = text;
    $("sign-out").hidden = !token();
    // actions need a token the relay's admin token accepted; none without one configured
    state.canAct = Boolean(token()) && state.adminToken === true;
    document.body.dataset.canAct = String(state.canAct);
    for (const button of document.querySelectorAll("[data-act]")) {
      button.disabled = !state.canAct;
      button.title = state.canAct ? "" : state.adminToken === false
        ? "Actions need an admin token: start the relay with --admin-token" : "Actions need the admin token: sign in";
    }
  }

  $("sign-in-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token").value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    $("token").value = "";
    $("sign-in").hidden = true;
    $("main").hidden = false;
    showError("");
    render();
  });

  $("sign-out").addEventListener("click", () => {
    signedOut("");
    showError("");
  });

  // -- confirmation dialog ----------------------------------------------------------

  function confirmAction(text, extra) {
    const dialog = $("confirm");
    $("confirm-text").textContent = text;
    const holder = $("confirm-extra");
    holder.replaceChildren(...(extra || []));
    dialog.returnValue = "";
    dialog.showModal();
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    });
  }

  async function act(text, call, done, extra) {
    if (!(await confirmAction(text, extra))) return;
    try {
      await call();
      toast(done);
      render();
    } catch (err) {
      if (!(err instanceof SignInNeeded)) showError(`Not done: ${err.message}`);
    }
  }

  function actionButton(label, onclick) {
    const button = el("button", { type: "button", "data-act": "", onclick, text: label });
    button.disabled = !state.canAct;
    return button;
  }

  // -- routing ----------------------------------------------------------------------

  function parseRoute() {
    const hash = location.hash.replace(/^#\/?/, "");
    const [path, search] = hash.split("?");
    const params = new URLSearchParams(search || "");
    const [view, ...rest] = (path || "overview").split("/");
    return {
      view: view || "overview",
      id: rest.length ? decodeURIComponent(rest.join("/")) : "",
      q: params.get("q") || "",
      offset: Math.max(0, parseInt(params.get("offset") || "0", 10) || 0),
    };
  }

  function go(view, id = "", params = {}) {
    const tail = id ? `/${encodeURIComponent(id)}` : "";
    location.hash = `#/${view}${tail}${query(params)}`;
  }

  window.addEventListener("hashchange", () => {
    state.route = parseRoute();
    render();
  });

  function show(view) {
    document.body.dataset.view = view;
    for (const section of document.querySelectorAll(".view")) {
      section.hidden = section.id !== `view-${view}`;
    }
    for (const link of document.querySelectorAll("[data-nav]")) {
      const current = link.dataset.nav === view || (view === "room" && link.dataset.nav === "rooms")
        || (view === "user" && link.dataset.nav === "users");
      if (current) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
  }

  // -- views ------------------------------------------------------------------------

  function learnAccess(data) {
    state.adminToken = data.adminToken === true;
    if (!state.adminToken) sessionStorage.removeItem(TOKEN_KEY); // nothing to sign in to
  }

  async function renderRelays() {
    const data = await api("api/dashboard/servers");
    learnAccess(data);
    state.relays = data.servers;
    $("relay-count").textContent = `(${data.servers.length})`;
    const rows = data.servers.map((relay) => {
      const periods = relay.degradedPeriods.length
        ? el("ul", { class: "periods" }, ...relay.degradedPeriods.slice(-5).reverse().map((p) =>
          el("li", { text: p.to ? `${ago(p.to)}, ${duration(p.seconds)}` : `now, since ${ago(p.from)}` })))
        : el("span", { class: "hint", text: "none" });
      const label = { up: "up", late: "heartbeat late", dead: relay.reaping ? "dead, being reaped" : "dead" }[relay.state];
      return el("tr", { "data-server-id": relay.serverId, "data-state": relay.state },
        el("td", {}, el("strong", { text: relay.serverId }), relay.self ? el("span", { class: "hint", text: " (this relay)" }) : null),
        el("td", { text: `${relay.host}:${relay.port}` }),
        el("td", { "data-field": "state" }, el("span", { class: `badge state-${relay.state}`, text: label })),
        el("td", { text: relay.uptime === null ? "–" : duration(relay.uptime) }),
        el("td", { "data-field": "sessions", text: relay.sessions }),
        el("td", { text: relay.version }),
        el("td", { title: stamp(relay.lastHeartbeat), text: relay.lastHeartbeat ? ago(relay.lastHeartbeat) : "–" }),
        el("td", {}, periods),
        el("td", {}, actionButton("Notify…", () => go("notify", "", { relay: relay.serverId }))));
    });
    $("relays").tBodies[0].replaceChildren(...rows);
    fillRelayChoice();
  }

  function roomsTable(rows) {
    const body = rows.map((room) => {
      const history = room.history || {};
      return el("tr", { "data-room-id": room.roomId },
        el("td", {}, el("a", { href: `#/room/${encodeURIComponent(room.roomId)}`, text: room.roomId })),
        el("td", { "data-field": "participants", text: room.participants }),
        el("td", { text: room.rate === null ? "–" : `${number(room.rate)}/min` }),
        el("td", { class: "mono", text: history.epoch || "–" }),
        el("td", { text: history.firstOffset ?? "–" }),
        el("td", { text: history.lastOffset ?? "–" }),
        el("td", { title: stamp(room.lastActivity), text: ago(room.lastActivity) }));
    });
    const table = el("table", { class: "grid room-table" },
      el("thead", {}, el("tr", {}, ...["Room", "Participants", "Messages", "Log epoch", "First offset", "Last offset", "Last activity"].map((h) => el("th", { text: h })))),
      el("tbody", {}, ...body));
    if (!rows.length) return el("p", { class: "hint empty", text: "No room." });
    return table;
  }

  // Previous / Next over a paged answer; ``rows`` its rows, ``id`` the view's (a room's)
  function pager(holder, data, view, rows = data.rooms || data.sessions, id = "") {
    const from = data.total ? data.offset + 1 : 0;
    const to = data.offset + rows.length;
    const prev = el("button", { type: "button", text: "Previous", disabled: data.offset <= 0,
      onclick: () => go(view, id, { q: data.q || undefined, offset: Math.max(0, data.offset - data.limit) }) });
    const next = el("button", { type: "button", text: "Next", disabled: to >= data.total,
      onclick: () => go(view, id, { q: data.q || undefined, offset: data.offset + data.limit }) });
    holder.replaceChildren(prev, el("span", { class: "range", text: `${from}-${to} of ${data.total}` }), next);
  }

  async function renderOverview(auto) {
    // the relays every refresh; the rooms (a scan of every room on the relay) less often
    const roomsDue = !auto || Date.now() - state.roomsAt >= ROOMS_REFRESH_MS;
    const [, data] = await Promise.all([
      renderRelays(),
      roomsDue ? api(`api/rooms${query({ offset: 0, limit: OVERVIEW_ROOMS })}`) : null,
    ]);
    if (!data) return;
    state.roomsAt = Date.now();
    $("overview-room-total").textContent = `(${data.total})`;
    $("overview-rooms").replaceChildren(roomsTable(data.rooms),
      data.total > data.rooms.length ? el("p", {}, el("a", { href: "#/rooms", text: `All ${data.total} rooms…` })) : "");
  }

  async function renderRooms() {
    const { q, offset } = state.route;
    if (document.activeElement !== $("room-q")) $("room-q").value = q;
    const data = await api(`api/rooms${query({ q, offset, limit: PAGE_SIZE })}`);
    $("room-total").textContent = `(${data.total}${q ? " found" : ""})`;
    $("rooms").replaceChildren(roomsTable(data.rooms));
    pager($("room-pager"), data, "rooms");
  }

  $("room-search").addEventListener("submit", (event) => {
    event.preventDefault();
    go("rooms", "", { q: $("room-q").value.trim() || undefined });
  });

  async function renderRoom() {
    const roomId = state.route.id;
    state.roomAt = Date.now();
    $("room-id").textContent = roomId;
    let room;
    try {
      // one page of its participants: a room of thousands is not read whole
      room = await api(`api/rooms/${encodeURIComponent(roomId)}${query({ offset: state.route.offset, limit: PAGE_SIZE })}`);
    } catch (err) {
      if (err instanceof SignInNeeded) throw err;
      $("room-facts").replaceChildren(el("dt", { text: "State" }), el("dd", { text: err.message }));
      $("room-participants").tBodies[0].replaceChildren();
      $("room-participant-pager").replaceChildren();
      $("room-messages").replaceChildren();
      return;
    }
    const history = room.history || {};
    const facts = [
      ["Participants", room.participantTotal],
      ["Created", room.createdAt ? ago(room.createdAt) : "–"],
      ["Last activity", room.lastActivity ? ago(room.lastActivity) : "–"],
      ["Log epoch", history.epoch || "–"],
      ["First offset", history.firstOffset ?? "–"],
      ["Last offset", history.lastOffset ?? "–"],
    ];
    $("room-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
    $("room-participant-count").textContent = `(${room.participantTotal})`;
    pager($("room-participant-pager"), { ...room, total: room.participantTotal }, "room", room.participants, roomId);
    // the user is the participant's userId (its login); its username is only the name
    // it shows in the room, chosen by the client: never act on that
    $("room-participants").tBodies[0].replaceChildren(...room.participants.map((p) => {
      const kickButton = p.userId ? actionButton("Kick…", () => kick(p.userId, false))
        : el("button", { type: "button", disabled: true, title: "No user id to kick", text: "Kick…" });
      return el("tr", { "data-session-id": p.sessionId, "data-user": p.userId || undefined },
        el("td", {}, userLink(p.userId)),
        el("td", { text: p.username }),
        el("td", { class: "mono", text: p.sessionId }),
        el("td", { text: p.serverId }),
        el("td", {}, kickButton));
    }));
    $("room-notify").onclick = () => go("notify", "", { room: roomId });
    await renderMessages(roomId, room.history);
  }

  async function renderMessages(roomId, history) {
    const list = $("room-messages");
    if (!history || !history.epoch) {
      list.replaceChildren(el("li", { class: "hint", text: "No log for this room." }));
      return;
    }
    let data;
    try {
      data = await api(`api/history${query({ destination: `/topic/room/${roomId}`, limit: MESSAGES_SHOWN })}`);
    } catch (err) {
      if (err instanceof SignInNeeded) throw err;
      list.replaceChildren(el("li", { class: "hint", text: err.message }));
      return;
    }
    const items = data.messages.slice().reverse().map((m) => {
      const headers = m.headers || {};
      let who = headers["x-sender"] || "";
      let text = m.body ?? "(binary)";
      try {
        const event = JSON.parse(text);
        if (event && typeof event === "object" && event.type) {
          // a room event (contract section 3): CHAT, JOIN, LEAVE or SYSTEM
          who = event.username || who;
          text = event.type === "CHAT" ? event.message : `${event.type}${event.message ? `: ${event.message}` : ""}`;
        }
      } catch {
        // a plain text body, shown as it is
      }
      return el("li", { "data-offset": m.offset },
        el("span", { class: "offset", text: `#${m.offset}` }), " ",
        who ? el("strong", { text: who }) : null, who ? " " : null,
        el("span", { text: String(text ?? "").slice(0, 500) }));
    });
    list.replaceChildren(...(items.length ? items : [el("li", { class: "hint", text: "No message retained." })]));
  }

  async function renderUsers() {
    const { q, offset } = state.route;
    if (document.activeElement !== $("user-q")) $("user-q").value = q;
    const data = await api(`api/sessions${query({ q, offset, limit: PAGE_SIZE })}`);
    $("session-total").textContent = `(${data.total} session${data.total === 1 ? "" : "s"}${q ? " found" : ""})`;
    const rows = data.sessions.map((s) => {
      return el("tr", { "data-session-id": s.sessionId, "data-user": s.user || undefined },
        el("td", {}, userLink(s.user)),
        el("td", { text: s.username }),
        el("td", { class: "mono", text: s.sessionId }),
        el("td", { text: s.serverId }),
        el("td", { title: stamp(s.connectedAt), text: ago(s.connectedAt) }),
        el("td", { text: s.rooms.join(", ") || "–" }));
    });
    $("sessions").replaceChildren(rows.length
      ? el("table", { class: "grid" },
        el("thead", {}, el("tr", {}, ...["User", "Name", "Session", "Relay", "Connected", "Rooms"].map((h) => el("th", { text: h })))),
        el("tbody", {}, ...rows))
      : el("p", { class: "hint empty", text: "No session." }));
    pager($("session-pager"), data, "users");
  }

  $("user-search").addEventListener("submit", (event) => {
    event.preventDefault();
    go("users", "", { q: $("user-q").value.trim() || undefined });
  });

  async function renderUser() {
    const user = state.route.id;
    $("user-name").textContent = user;
    const data = await api(`api/users/${encodeURIComponent(user)}`);
    const badge = $("user-online");
    badge.textContent = data.online ? "online" : "offline";
    badge.dataset.online = String(data.online);
    $("user-sessions").tBodies[0].replaceChildren(...data.sessions.map((s) =>
      el("tr", { "data-session-id": s.sessionId },
        el("td", { class: "mono", text: s.sessionId }),
        el("td", { text: s.serverId }),
        el("td", { title: stamp(s.connectedAt), text: ago(s.connectedAt) }),
        el("td", {}, ...s.rooms.flatMap((r, i) => [i ? ", " : "", el("a", { href: `#/room/${encodeURIComponent(r)}`, text: r })])))));
    $("user-kick").onclick = () => kick(user, false);
    $("user-suspend").onclick = () => kick(user, true);
    $("user-lift").onclick = () => act(`Lift the suspension of ${user}?`,
      () => api(`api/users/${encodeURIComponent(user)}/kick`, "POST", { lift: true }), `Suspension of ${user} lifted.`);
    $("user-disconnect").onclick = () => {
      const reason = el("input", { id: "confirm-reason", maxlength: 1000, placeholder: "reason (optional)", "aria-label": "Reason" });
      act(`Disconnect every session of ${user}? They may connect again.`,
        () => api(`api/users/${encodeURIComponent(user)}/disconnect`, "POST", reason.value ? { reason: reason.value } : {}),
        `Sessions of ${user} disconnected.`, [reason]);
    };
  }

  // a link to a user's page; no link without a user id (a name is not one)
  function userLink(user) {
    if (!user) return el("span", { class: "hint", text: "–" });
    return el("a", { href: `#/user/${encodeURIComponent(user)}`, text: user });
  }

  function kick(user, suspend) {
    if (!suspend) {
      return act(`Kick ${user}? Every session of this user ends, on every relay.`,
        () => api(`api/users/${encodeURIComponent(user)}/kick`, "POST", {}), `${user} kicked.`);
    }
    const minutes = el("input", { id: "confirm-minutes", type: "number", min: 1, value: 60, "aria-label": "Minutes" });
    return act(`Kick ${user} and refuse it for how many minutes?`,
      () => api(`api/users/${encodeURIComponent(user)}/kick`, "POST",
        { until: Date.now() + Math.max(1, Number(minutes.value) || 60) * 60000 }),
      `${user} kicked and suspended.`, [el("label", { for: "confirm-minutes", text: "Minutes " }), minutes]);
  }

  // -- charts -----------------------------------------------------------------------

  function fillRelayChoice() {
    const select = $("chart-relay");
    const chosen = select.value;
    const options = [el("option", { value: "", text: "the cluster and every relay" }),
      ...state.relays.map((r) => el("option", { value: r.serverId, text: r.serverId }))];
    select.replaceChildren(...options);
    select.value = state.relays.some((r) => r.serverId === chosen) ? chosen : "";
  }

  $("chart-relay").addEventListener("change", () => render());

  function chart(spec, series, now, windowMs) {
    const width = 560;
    const height = 150;
    const pad = { left: 48, right: 8, top: 10, bottom: 22 };
    const values = series.flatMap((s) => s.points.map((p) => p[1]).filter((v) => v !== null));
    const highest = Math.max(0, ...values);
    const top = highest > 0 ? highest * 1.1 : 1;
    // the x axis spans the window, or less while the rings hold less
    const times = series.flatMap((s) => s.points.map((p) => p[0]));
    const start = Math.max(now - windowMs, Math.min(now - 10000, ...times));
    const span = Math.max(1, now - start);
    const x = (t) => pad.left + ((t - start) / span) * (width - pad.left - pad.right);
    const y = (v) => height - pad.bottom - (v / top) * (height - pad.top - pad.bottom);
    const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", class: "chart", "data-chart": spec.key });
    root.append(svg("title", {}, `${spec.title}, last ${duration(span / 1000)}`));
    for (const frac of [0, 0.5, 1]) {
      const v = (top / 1.1) * frac;
      root.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v), class: "gridline" }));
      root.append(svg("text", { x: pad.left - 4, y: y(v) + 4, "text-anchor": "end", class: "tick" }, number(v, spec.unit)));
    }
    root.append(svg("text", { x: pad.left, y: height - 4, class: "tick" }, `${duration(span / 1000)} ago`));
    root.append(svg("text", { x: width - pad.right, y: height - 4, "text-anchor": "end", class: "tick" }, "now"));
    series.forEach((s) => {
      const points = s.points.filter((p) => p[1] !== null && p[0] >= start);
      if (!points.length) return;
      const line = svg("polyline", {
        points: points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" "),
        fill: "none", stroke: s.colour, "stroke-width": s.bold ? 2.5 : 1.5, "data-series": s.name,
      });
      const last = points[points.length - 1][1];
      line.append(svg("title", {}, `${s.name}: ${number(last, spec.unit)} now`));
      root.append(line);
    });
    const legend = el("ul", { class: "legend" }, ...series.map((s) => {
      const last = [...s.points].reverse().find((p) => p[1] !== null);
      return el("li", { style: `--swatch: ${s.colour}` }, `${s.name}: ${last ? number(last[1], spec.unit) : "–"}`);
    }));
    return el("figure", { class: "chart-box" }, el("figcaption", { text: spec.title }), root, legend);
  }

  async function renderCharts() {
    if (!state.relays.length) await renderRelays();
    const data = await api("api/dashboard/samples");
    const only = $("chart-relay").value;
    const relayIds = Object.keys(data.servers).sort().filter((id) => !only || id === only);
    $("chart-scope").textContent = `one sample every ${data.interval} s per relay`;
    const windowMs = data.window * 1000;
    const figures = CHARTS.map((spec) => {
      const series = [];
      if (!only) {
        series.push({ name: spec.key === "rttMs" ? "cluster (worst)" : "cluster", colour: "#111827", bold: true,
          points: data.cluster.map((s) => [s.t, s[spec.key]]) });
      }
      relayIds.forEach((id, i) => series.push({ name: id, colour: COLOURS[i % COLOURS.length],
        points: data.servers[id].map((s) => [s.t, s[spec.key]]) }));
      return chart(spec, series, data.now, windowMs);
    });
    $("charts").replaceChildren(...figures);
  }

  // -- notify -----------------------------------------------------------------------

  function renderNotify() {
    const params = new URLSearchParams(location.hash.split("?")[1] || "");
    const form = $("notify-form");
    if (params.get("room")) {
      form.elements.to.value = "room";
      $("notify-target").value = params.get("room");
    } else if (params.get("relay")) {
      form.elements.to.value = "relay";
      $("notify-target").value = params.get("relay");
    }
  }

  $("notify-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const form = event.target;
    const to = form.elements.to.value;
    const target = $("notify-target").value.trim();
    const message = $("notify-message").value.trim();
    if (!message || (to !== "all" && !target)) {
      showError(to === "all" ? "Write a message." : `Name the ${to} and write a message.`);
      return;
    }
    const body = { message };
    if (to === "room") body.roomId = target;
    if (to === "relay") body.serverId = target;
    const whom = to === "all" ? "every client" : to === "room" ? `room ${target}` : `the clients of relay ${target}`;
    act(`Send this notification to ${whom}?`, () => api("api/system/notifications", "POST", body),
      `Notification sent to ${whom}.`).then(() => {
      $("notify-message").value = "";
    });
  });

  // -- the loop -----------------------------------------------------------------------

  const VIEWS = {
    overview: renderOverview,
    rooms: renderRooms,
    room: renderRoom,
    users: renderUsers,
    user: renderUser,
    charts: renderCharts,
    notify: async () => renderNotify(),
  };

  function showAccess() {
    if (state.adminToken === false) setAccess("read-only", "read-only (no admin token on this relay)");
    else setAccess(token() ? "token" : "read-only", token() ? "signed in" : "read-only (no token sent)");
  }

  async function render(auto = false) {
    const route = state.route;
    const view = VIEWS[route.view] ? route.view : "overview";
    show(view);
    if (!$("sign-in").hidden) return;
    state.busy = true;
    try {
      if (state.adminToken === null) learnAccess(await api("api/dashboard/servers"));
      await VIEWS[view](auto);
      if (!$("error").textContent.startsWith("Not done")) showError("");
      document.body.dataset.loaded = view;
    } catch (err) {
      if (!(err instanceof SignInNeeded)) showError(err.message);
    } finally {
      state.busy = false;
      if ($("sign-in").hidden) showAccess(); // else signed out, and said so
    }
  }

  setInterval(() => {
    const view = state.route.view;
    const live = ["overview", "user", "charts"].includes(view)
      || (view === "room" && Date.now() - state.roomAt >= ROOMS_REFRESH_MS);
    if (live && !state.busy && !document.hidden && !$("confirm").open) render(true);
  }, REFRESH_MS);

  state.route = parseRoute();
  render();
})();
