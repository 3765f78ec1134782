// Unit tests of widget/transport.ts `Transport` with a fake anywidget model.

import assert from "node:assert/strict";
import { test } from "node:test";
import { settled as state, sleep } from "./helpers.js";
import type { MessageModel } from "../src/widget/transport.js";
import { RequestError, Transport } from "../src/widget/transport.js";

type Listener = (...args: any[]) => void;

/** The parts of an anywidget model the transport uses; `receive` plays the kernel. */
class FakeModel implements MessageModel {
  sent: Array<{ content: any; buffers?: unknown[] }> = [];
  listeners = new Map<string, Set<Listener>>();
  failSend: Error | undefined;

  send(content: any, _callbacks?: any, buffers?: ArrayBuffer[] | ArrayBufferView[]): void {
    if (this.failSend !== undefined) throw this.failSend;
    this.sent.push({ content, buffers });
  }

  on(event: string, handler: Listener): void {
    let set = this.listeners.get(event);
    if (set === undefined) this.listeners.set(event, (set = new Set()));
    set.add(handler);
  }

  off(event?: string | null, handler?: Listener | null): void {
    if (event == null) this.listeners.clear();
    else if (handler == null) this.listeners.delete(event);
    else this.listeners.get(event)?.delete(handler);
  }

  /** The kernel sends a message (anywidget passes no buffers argument when there are none). */
  receive(content: any, buffers?: unknown[]): void {
    for (const handler of Array.from(this.listeners.get("msg:custom") ?? [])) handler(content, buffers);
  }

  get last(): any {
    return this.sent[this.sent.length - 1]?.content;
  }
}


async function rejection(promise: Promise<unknown>): Promise<RequestError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof RequestError, `expected a RequestError, got ${String(error)}`);
    return error;
  }
  return assert.fail("the promise resolved");
}

/** Runs `fn` with console.error silenced; returns what it would have printed. */
async function quietErrors(fn: () => void | Promise<void>): Promise<unknown[][]> {
  const printed: unknown[][] = [];
  const original = console.error;
  console.error = (...args: unknown[]) => printed.push(args);
  try {
    await fn();
  } finally {
    console.error = original;
  }
  return printed;
}

test("a request carries a fresh correlation id and resolves with the reply of that id", async () => {
  const model = new FakeModel();
  const t = new Transport(model);
  const buffer = new ArrayBuffer(4);
  const a = t.request({ type: "chunks", keys: ["raw/0/0.0"] }, [buffer]);
  const b = t.request({ type: "undo" });
  assert.equal(model.sent.length, 2);
  const [ma, mb] = model.sent;
  assert.deepEqual(ma.content, { type: "chunks", keys: ["raw/0/0.0"], id: ma.content.id });
  assert.deepEqual(ma.buffers, [buffer]);
  assert.equal(typeof ma.content.id, "number");
  assert.ok(mb.content.id > ma.content.id, "ids increase");
  assert.equal(t.inFlight, 2);

  // Replies may come in any order; each resolves the request with its id.
  const replyBuffers = [new Uint8Array([1, 2, 3])];
  model.receive({ type: "undo-reply", id: mb.content.id, changed: true });
  assert.equal(await state(a), "pending");
  assert.deepEqual((await b).content, { type: "undo-reply", id: mb.content.id, changed: true });
  model.receive({ type: "chunks-reply", id: ma.content.id, found: [true] }, replyBuffers);
  const reply = await a;
  assert.deepEqual(reply.content.found, [true]);
  assert.equal(reply.buffers[0], replyBuffers[0]);
  assert.equal(t.inFlight, 0);
  assert.deepEqual(t.stats, { sent: 2, replies: 2, errors: 0, timeouts: 0 });
});

test("ids are unique across transports on the page (two views of one widget see each other's replies)", async () => {
  const model = new FakeModel();
  const t1 = new Transport(model);
  const t2 = new Transport(model);
  const a = t1.request({ type: "update-now" });
  const b = t2.request({ type: "update-now" });
  const [ia, ib] = model.sent.map((m) => m.content.id);
  assert.notEqual(ia, ib);
  // Both transports listen to the same model: the reply for t2's request settles only t2's.
  model.receive({ type: "update-now-reply", id: ib });
  assert.equal(await state(b), "fulfilled");
  assert.equal(await state(a), "pending");
  assert.equal(t1.inFlight, 1);
  t1.dispose();
  t2.dispose();
  await a.catch(() => undefined);
});

test("an error reply rejects its request with the kernel's message", async () => {
  const model = new FakeModel();
  const t = new Transport(model);
  const p = t.request({ type: "stroke", label: 9, radius: 1, points: [[0, 0]] });
  model.receive({ type: "error", id: model.last.id, message: "label 9 out of range" });
  const error = await rejection(p);
  assert.equal(error.kind, "error");
  assert.equal(error.message, "label 9 out of range");
  assert.equal(t.stats.errors, 1);
  assert.equal(t.inFlight, 0);
});

test("a reply whose id is not pending goes to the handlers of its type, not to another request", async () => {
  const model = new FakeModel();
  const t = new Transport(model);
  const p = t.request({ type: "chunks", keys: [] });
  const got: any[] = [];
  t.on("chunks-reply", (content) => got.push(content));
  t.on("error", (content) => got.push(content));
  model.receive({ type: "chunks-reply", id: model.last.id + 1000 });
  model.receive({ type: "error", id: model.last.id + 1001, message: "someone else's" });
  model.receive({ type: "error", message: "no id at all" });
  assert.equal(await state(p), "pending");
  assert.equal(got.length, 3);
  assert.equal(got[2].message, "no id at all");
  t.dispose();
  await p.catch(() => undefined);
});

test("a request the kernel never answers times out; a late reply is ignored", async () => {
  const model = new FakeModel();
  const t = new Transport(model, 1000);
  const p = t.request({ type: "chunks", keys: [] }, undefined, { timeout: 20 });
  const id = model.last.id;
  const error = await rejection(p);
  assert.equal(error.kind, "timeout");
  assert.match(error.message, /'chunks'/);
  assert.equal(t.inFlight, 0);
  assert.equal(t.stats.timeouts, 1);
  const late: any[] = [];
  t.on("chunks-reply", (c) => late.push(c));
  model.receive({ type: "chunks-reply", id });
  assert.equal(t.stats.replies, 0);
  assert.equal(late.length, 1, "an unmatched reply is an unsolicited message");
});

test("the default timeout applies, and timeout 0 means never", async () => {
  const model = new FakeModel();
  const t = new Transport(model, 15);
  const timed = t.request({ type: "undo" });
  const never = t.request({ type: "redo" }, undefined, { timeout: 0 });
  assert.equal((await rejection(timed)).kind, "timeout");
  await sleep(30);
  assert.equal(await state(never), "pending");
  model.receive({ type: "redo-reply", id: model.last.id, changed: false });
  assert.equal(await state(never), "fulfilled");
});

test("aborting a request rejects it and sends a cancel notify with its id", async () => {
  const model = new FakeModel();
  const t = new Transport(model);
  const controller = new AbortController();
  const p = t.request({ type: "chunks", keys: ["a"] }, undefined, { signal: controller.signal });
  const id = model.last.id;
  controller.abort();
  const error = await rejection(p);
  assert.equal(error.kind, "aborted");
  assert.equal(model.sent.length, 2);
  const cancel = model.last;
  assert.equal(cancel.type, "cancel");
  assert.deepEqual(cancel.ids, [id]);
  assert.equal(typeof cancel.id, "number");
  assert.notEqual(cancel.id, id);
  assert.equal(t.inFlight, 0);
  // The reply that may still come is ignored.
  model.receive({ type: "chunks-reply", id, found: [] });
  assert.equal(t.stats.replies, 0);
});

test("an already aborted signal rejects without sending; aborting after the reply sends nothing", async () => {
  const model = new FakeModel();
  const t = new Transport(model);
  const aborted = new AbortController();
  aborted.abort();
  assert.equal((await rejection(t.request({ type: "undo" }, undefined, { signal: aborted.signal }))).kind, "aborted");
  assert.equal(model.sent.length, 0);

  const controller = new AbortController();
  const p = t.request({ type: "undo" }, undefined, { signal: controller.signal });
  model.receive({ type: "undo-reply", id: model.last.id, changed: true });
  await p;
  controller.abort();
  assert.equal(model.sent.length, 1, "no cancel for a request already answered");
});

test("dispose rejects every pending request, stops listening and sends nothing more", async () => {
  const model = new FakeModel();
  const t = new Transport(model);
  const a = t.request({ type: "undo" });
  const b = t.request({ type: "redo" }, undefined, { timeout: 0 });
  const ids = model.sent.map((m) => m.content.id);
  const got: any[] = [];
  t.on("refresh", (c) => got.push(c));
  t.dispose();
  assert.equal((await rejection(a)).kind, "closed");
  assert.equal((await rejection(b)).kind, "closed");
  assert.equal(t.inFlight, 0);
  assert.equal(model.listeners.get("msg:custom")?.size ?? 0, 0, "the model listener is removed");
  // Nothing reaches the transport any more, and it sends nothing.
  t.dispatch({ type: "refresh" }, []);
  assert.equal(got.length, 0, "handlers are cleared");
  model.receive({ type: "undo-reply", id: ids[0], changed: true });
  assert.equal((await rejection(t.request({ type: "update-now" }))).kind, "closed");
  t.notify({ type: "seen", keys: [] });
  assert.equal(model.sent.length, 2);
  t.dispose(); // twice is fine
});

test("unsolicited kernel messages go to on(type) handlers with their buffers; on() returns a remover", () => {
  const model = new FakeModel();
  const t = new Transport(model);
  const first: any[] = [];
  const second: any[] = [];
  const removeFirst = t.on("refresh", (content, buffers) => first.push([content, buffers]));
  t.on("refresh", (content) => second.push(content));
  t.on("stroke-reply", () => assert.fail("a handler of another type ran"));
  const buffers = [new Uint8Array([7])];
  model.receive({ type: "refresh", layers: ["labels"] }, buffers);
  assert.equal(first.length, 1);
  assert.deepEqual(first[0][0], { type: "refresh", layers: ["labels"] });
  assert.equal(first[0][1][0], buffers[0]);
  assert.equal(second.length, 1);
  removeFirst();
  model.receive({ type: "refresh", layers: [] });
  assert.equal(first.length, 1);
  assert.equal(second.length, 2);
  // A message without buffers gives handlers an empty list.
  let bare: unknown;
  t.on("error", (_c, b) => (bare = b));
  model.receive({ type: "error", id: null, message: "no request of this view" });
  assert.deepEqual(bare, []);
});

test("malformed kernel messages are ignored", () => {
  const model = new FakeModel();
  const t = new Transport(model);
  let calls = 0;
  t.on("refresh", () => calls++);
  t.on("error", () => calls++);
  for (const content of [null, undefined, 42, "refresh", {}, { type: 3 }, []]) model.receive(content);
  assert.equal(calls, 0);
});

test("a throwing handler does not stop the other handlers or later messages", async () => {
  const model = new FakeModel();
  const t = new Transport(model);
  const got: number[] = [];
  t.on("refresh", () => {
    throw new Error("boom");
  });
  t.on("refresh", (c) => got.push(c.keys.length));
  const printed = await quietErrors(() => {
    model.receive({ type: "refresh", layers: ["labels"], keys: ["labels/0/0.0"], missing: [] });
    model.receive({ type: "refresh", layers: ["labels"], keys: ["labels/0/0.0", "labels/0/0.1"], missing: [] });
  });
  assert.deepEqual(got, [1, 2]);
  assert.equal(printed.length, 2, "each failure is logged");
  // Replies still work after a handler threw.
  const p = t.request({ type: "update-now" });
  model.receive({ type: "update-now-reply", id: model.last.id });
  assert.equal(await state(p), "fulfilled");
});

test("a handler that removes itself while running does not disturb the dispatch", () => {
  const model = new FakeModel();
  const t = new Transport(model);
  const calls: string[] = [];
  const remove = t.on("refresh", () => {
    calls.push("once");
    remove();
  });
  t.on("refresh", () => calls.push("always"));
  model.receive({ type: "refresh" });
  model.receive({ type: "refresh" });
  assert.deepEqual(calls, ["once", "always", "always"]);
});

test("notify sends a message with its own id and expects no reply", () => {
  const model = new FakeModel();
  const t = new Transport(model);
  t.notify({ type: "seen", keys: ["labels/0/0.0"] });
  assert.equal(model.sent.length, 1);
  assert.equal(model.last.type, "seen");
  assert.deepEqual(model.last.keys, ["labels/0/0.0"]);
  assert.equal(typeof model.last.id, "number");
  assert.equal(t.inFlight, 0);
});

test("a send that throws (closed comm) rejects the request and leaves nothing pending", async () => {
  const model = new FakeModel();
  const t = new Transport(model, 1000);
  model.failSend = new Error("Comm is closed");
  const p = t.request({ type: "update-now" });
  await assert.rejects(p, /Comm is closed/);
  assert.equal(t.inFlight, 0, "the failed request is not counted as in flight until its timeout");
  t.dispose();
});

test("requests, replies and handlers have the protocol's types", async () => {
  const model = new FakeModel();
  const t = new Transport(model);
  const added = t.request({ type: "add-class", name: "Nuclei" });
  model.receive({ type: "add-class-reply", id: model.last.id, label: 3 });
  const label: number = (await added).content.label;
  assert.equal(label, 3);
  const undone = t.request({ type: "undo" });
  model.receive({ type: "undo-reply", id: model.last.id, changed: false });
  const changed: boolean = (await undone).content.changed;
  assert.equal(changed, false);
  const chunks = t.request({ type: "chunks", keys: ["labels/0/0.0"] });
  model.receive({ type: "chunks-reply", id: model.last.id, found: [false] });
  const found: boolean[] = (await chunks).content.found;
  assert.deepEqual(found, [false]);
  // a request added to the protocol gets its typed reply without a change here
  const objects = t.request({ type: "objects", label: 2, threshold: 0.5 });
  model.receive({ type: "objects-reply", id: model.last.id, count: 12, version: 1 });
  const count: number = (await objects).content.count;
  assert.equal(count, 12);
  const renamed = t.request({ type: "rename-class", label: 1, name: "Background" });
  model.receive({ type: "rename-class-reply", id: model.last.id });
  // @ts-expect-error: a plain reply carries nothing but its type and id
  assert.equal((await renamed).content.label, undefined);
  // what tsc refuses (tests/test_js.py type-checks these lines): each also goes out as is, the kernel would refuse it
  // @ts-expect-error: no such request
  void t.request({ type: "ping" }).catch(() => undefined);
  // @ts-expect-error: a stroke needs a label, a radius and points
  void t.request({ type: "stroke" }).catch(() => undefined);
  // @ts-expect-error: "seen" gets no reply: it is sent with notify()
  void t.request({ type: "seen", keys: [] }).catch(() => undefined);
  // @ts-expect-error: a request of the kernel's is not a notification
  t.notify({ type: "undo" });
  // @ts-expect-error: the kernel sends no "status" message
  t.on("status", () => undefined);
  t.on("refresh", (content) => {
    const keys: string[] = content.keys;
    assert.ok(Array.isArray(keys));
  });
  assert.deepEqual(model.sent.slice(5).map((m) => m.content.type), ["ping", "stroke", "seen", "undo"]);
  t.dispose();
});
