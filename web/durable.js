/*
 * stomprelay chat: where the page is in a durable log (docs/history.md), for a room's
 * topic (app.js) and for the user's inbox (inbox.js) alike.
 *
 * A position is {epoch, offset, keys, ids}: the last (x-epoch, x-offset) shown, and the
 * "epoch:offset" keys and message-ids already shown, so that a MESSAGE seen twice (the
 * replay of a resume overlapping what came live, a reconnect) is dropped. The first
 * subscription to a log asks for x-history; every later one resumes with
 * x-since-offset/x-since-epoch; the SUBSCRIBE's RECEIPT says where the log is
 * (x-offset, x-epoch) and whether all that was missed is coming (x-recovered).
 */
"use strict";

(() => {
  const OFFSET = /^\d{1,15}$/;
  /** Keys and message-ids remembered per log to drop duplicates. */
  const MAX_SEEN = 5000;

  function parseOffset(value) {
    return typeof value === "string" && OFFSET.test(value) ? Number(value) : null;
  }

  function addCapped(set, value) {
    set.add(value);
    if (set.size > MAX_SEEN) set.delete(set.values().next().value);
  }

  function position() {
    return { epoch: "", offset: 0, keys: new Set(), ids: new Set() };
  }

  /** A MESSAGE's place in its log: {epoch, offset (null: not logged), id}. */
  function placeOf(headers) {
    return {
      epoch: headers["x-epoch"] || "",
      offset: parseOffset(headers["x-offset"]),
      id: headers["message-id"] || "",
    };
  }

  /** Shown already: the same epoch:offset, or the same id (``idKey``: the id, or a key
   * made of it when one id may stand for two messages). */
  function isDuplicate(record, { epoch, offset }, idKey) {
    return (
      (Boolean(epoch) && offset !== null && record.keys.has(`${epoch}:${offset}`)) ||
      (Boolean(idKey) && record.ids.has(idKey))
    );
  }

  /** Remember a message as shown, without moving the position (restored from storage). */
  function seen(record, { epoch, offset }, idKey) {
    if (epoch && offset !== null) addCapped(record.keys, `${epoch}:${offset}`);
    if (idKey) addCapped(record.ids, idKey);
  }

  /** Remember a message as shown and move the position to it. */
  function note(record, place, idKey) {
    seen(record, place, idKey);
    const { epoch, offset } = place;
    if (!epoch || offset === null) return;
    if (epoch !== record.epoch) {
      record.epoch = epoch;
      record.offset = offset;
    } else if (offset > record.offset) {
      record.offset = offset;
    }
  }

  /**
   * An x-gap MESSAGE: "FROM-TO" (trimmed before we got them) or "reset" (a new epoch). The
   * position moves past it; returns {reset, count} (count null when the range is unreadable).
   */
  function gap(record, value, epoch) {
    const text = String(value).trim();
    if (text === "reset") {
      if (epoch) record.epoch = epoch;
      record.offset = 0;
      return { reset: true, count: null };
    }
    const range = /^(\d{1,15})-(\d{1,15})$/.exec(text);
    if (!range) return { reset: false, count: null };
    const from = Number(range[1]);
    const to = Number(range[2]);
    if (!record.epoch && epoch) record.epoch = epoch;
    if ((!epoch || epoch === record.epoch) && to > record.offset) record.offset = to;
    return { reset: false, count: to >= from ? to - from + 1 : null };
  }

  /**
   * The SUBSCRIBE's headers: a resume from the position when there is one (then `since`
   * is its offset), else x-history. Returns {headers, since, sinceEpoch}.
   */
  function subscription(record, receipt, historySize) {
    const headers = { receipt };
    if (record.epoch) {
      headers["x-since-offset"] = String(record.offset);
      headers["x-since-epoch"] = record.epoch;
      return { headers, since: record.offset, sinceEpoch: record.epoch };
    }
    headers["x-history"] = String(historySize);
    return { headers, since: null, sinceEpoch: "" };
  }

  /**
   * The SUBSCRIBE's RECEIPT, for a subscription made from `since`/`sinceEpoch`. A new epoch
   * restarts the position. Returns {unrecovered (a resume the relay could not complete),
   * logged (false: the destination has no log, everything is live), replayTo (the last
   * offset of the replay, or null when nothing is to be replayed), epoch, moved (the
   * position changed)}.
   */
  function receipt(record, { since, sinceEpoch }, headers) {
    const last = parseOffset(headers["x-offset"]);
    const epoch = headers["x-epoch"] || "";
    const unrecovered = since !== null && headers["x-recovered"] === "false";
    if (last === null) return { unrecovered, logged: false, replayTo: null, epoch, moved: false };
    let moved = false;
    if (epoch && epoch !== record.epoch) {
      // A new history (or our first look at this one): positions restart.
      record.epoch = epoch;
      record.offset = 0;
      moved = true;
    }
    const from = since !== null && Boolean(epoch) && epoch === sinceEpoch ? since : 0;
    return { unrecovered, logged: true, replayTo: last > from ? last : null, epoch, moved };
  }

  window.StomprelayDurable = {
    parseOffset,
    position,
    placeOf,
    isDuplicate,
    seen,
    note,
    gap,
    subscription,
    receipt,
  };
})();
