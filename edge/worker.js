// chatguard as an edge worker: guards the origin at env.ORIGIN.
//
// Every decision is the wasm engine's (src/host/edge.rs); this file only moves
// bytes: it asks the guard about each request, forwards what the guard lets
// through with fetch, pipes the response body through the guard, and sends the
// calls the guard asks for (remote JWKS, audit batches) with fetch.
//
// Bindings: POLICY (JSON text or object; absent = the compiled-in default policy),
// ORIGIN (base URL of the guarded service), COLLECTOR_URL (informational: the
// policy's audit.cluster is the collector's base URL at the edge), and
// optionally STATE (a Durable Object namespace of class ChatguardState),
// STATE_NAME (the object's name, default "chatguard"), STATE_TIMEOUT_MS.
//
// State (token cache, JWKS, audit queue) lives in this isolate's memory. Rate
// buckets and lockout do too, so each isolate enforces its own limits, unless
// STATE is bound: then they live in one ChatguardState object, which answers
// each request's lockout and rate stages in one round trip (see the README).

import { DurableObject } from "cloudflare:workers";
import { initSync, Guard } from "./pkg/chatguard.js";
import wasmModule from "./pkg/chatguard_bg.wasm";

let guard = null;
let wasmReady = false;
// How long a request waits for the state object before failing closed (503).
const STATE_TIMEOUT_MS = 2000;
// provider -> promise of its JWKS fetch under way in this isolate
const jwksInFlight = new Map();
let ticking = false;

const EMPTY = new Uint8Array(0);
// Bounds the background audit loop of one request (each round waits a tick).
const MAX_TICK_ROUNDS = 50;

function initWasm() {
  if (!wasmReady) {
    initSync({ module: wasmModule });
    wasmReady = true;
  }
}

// A JSON text binding (workerd `text`, wrangler secret) or, from a wrangler
// `[vars]` table, an object; absent means the compiled-in default.
function policyText(env) {
  return env.POLICY == null ? "" : typeof env.POLICY === "string" ? env.POLICY : JSON.stringify(env.POLICY);
}

function getGuard(env) {
  if (guard === null) {
    initWasm();
    guard = new Guard(policyText(env));
  }
  return guard;
}

// Asks the state object; null when it cannot answer in time (the engine then
// fails closed). The query carries no token (see engine::state).
async function askState(env, query) {
  let timer;
  try {
    const stub = env.STATE.get(env.STATE.idFromName(env.STATE_NAME || "chatguard"));
    const timeoutMs = Number(env.STATE_TIMEOUT_MS) > 0 ? Number(env.STATE_TIMEOUT_MS) : STATE_TIMEOUT_MS;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error("timed out")), timeoutMs);
    });
    const answer = await Promise.race([stub.answer(query), timeout]);
    return answer instanceof Uint8Array ? answer : null;
  } catch (e) {
    console.error("chatguard: state object unavailable: " + String(e && e.message ? e.message : e));
    return null;
  } finally {
    clearTimeout(timer);
  }
}

// The request-headers verdict: in this isolate, or with the state object's answer.
async function decide(g, env, ctx, request, clientIp) {
  const args = [request.method, request.url, request.headers, clientIp];
  if (!env.STATE) {
    let verdict = g.onRequest(...args, true);
    if (verdict.action === "wait") {
      await waitForKeys(g, verdict.provider, verdict.waitMs, ctx);
      verdict = g.onRequest(...args, false);
    }
    return verdict;
  }
  let plan = g.planState(...args, true);
  if (plan.action === "wait") {
    await waitForKeys(g, plan.provider, plan.waitMs, ctx);
    plan = g.planState(...args, false);
  }
  if (plan.action !== "state") {
    return plan;
  }
  const answer = plan.query ? await askState(env, plan.query) : null;
  return plan.pending.resume(answer);
}

// Ends an exchange; a charge of LLM tokens goes to the state object.
function finish(exchange, status, env, ctx) {
  const charge = exchange?.log(status);
  if (charge && env.STATE) {
    ctx.waitUntil(askState(env, charge));
  }
}

// The Durable Object holding rate buckets and lockout for every isolate bound
// to it. Its guard runs the engine's own lockout and rate code over this
// object's memory; a Durable Object handles one call at a time, so each
// answer is atomic. State is in memory: it starts over (full buckets, no
// locks) when the object is evicted or restarted.
export class ChatguardState extends DurableObject {
  constructor(state, env) {
    super(state, env);
    this.guard = null;
  }

  answer(query) {
    if (this.guard === null) {
      initWasm();
      this.guard = Guard.forState(policyText(this.env));
    }
    return this.guard.answerState(new Uint8Array(query));
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function jsonResponse(status, value) {
  return new Response(JSON.stringify(value), {
    status,
    headers: { "content-type": "application/json", "cache-control": "no-store" },
  });
}

function replyResponse(reply) {
  return new Response(reply.body, { status: reply.status, headers: reply.headers });
}

// Sends the JWKS fetches the guard says are due; each answer goes back to it.
function startJwksFetches(g, ctx) {
  for (const call of g.jwksDue()) {
    const done = (async () => {
      try {
        const res = await fetch(call.url, {
          method: call.method,
          headers: call.headers,
          signal: AbortSignal.timeout(call.timeoutMs),
        });
        const body = new Uint8Array(await res.arrayBuffer());
        g.jwksFinished(call.provider, res.status, body);
      } catch (e) {
        g.jwksFinished(call.provider, undefined, EMPTY);
      } finally {
        jwksInFlight.delete(call.provider);
      }
    })();
    jwksInFlight.set(call.provider, done);
    ctx.waitUntil(done);
  }
}

async function waitForKeys(g, provider, waitMs, ctx) {
  startJwksFetches(g, ctx);
  const inFlight = jwksInFlight.get(provider);
  if (inFlight) {
    await Promise.race([inFlight, sleep(waitMs)]);
  }
}

async function sendCall(g, call) {
  try {
    const res = await fetch(call.url, {
      method: call.method,
      headers: call.headers,
      body: call.body.length > 0 ? call.body : undefined,
      signal: AbortSignal.timeout(call.timeoutMs),
    });
    await res.arrayBuffer();
    g.callFinished(call.id, res.status);
  } catch (e) {
    g.callFinished(call.id, undefined);
  }
}

// Audit batches: sent now if due; while records are pending, this isolate
// keeps one loop ticking (the runtime has no timer of its own for us).
function pump(g, ctx) {
  for (const call of g.tick()) {
    ctx.waitUntil(sendCall(g, call));
  }
  if (ticking || g.auditPending() === 0) {
    return;
  }
  ticking = true;
  ctx.waitUntil(
    (async () => {
      try {
        const period = g.tickPeriodMs() ?? 1000;
        for (let round = 0; round < MAX_TICK_ROUNDS && g.auditPending() > 0; round++) {
          await sleep(period);
          await Promise.all(g.tick().map((call) => sendCall(g, call)));
        }
      } finally {
        ticking = false;
      }
    })(),
  );
}

// Reads a body through `filter(chunk, end)`; returns {bytes} or {reply}.
async function readThrough(stream, filter) {
  const parts = [];
  let size = 0;
  const take = (out) => {
    if (!(out instanceof Uint8Array)) {
      return out;
    }
    parts.push(out);
    size += out.length;
    return null;
  };
  if (stream !== null) {
    const reader = stream.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      const reply = take(filter(value, false));
      if (reply) {
        reader.cancel().catch(() => {});
        return { reply };
      }
    }
  }
  const reply = take(filter(EMPTY, true));
  if (reply) return { reply };
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const p of parts) {
    bytes.set(p, at);
    at += p.length;
  }
  return { bytes };
}

function applyEdits(headers, edits) {
  for (const name of edits.remove) headers.delete(name);
  for (const [name, value] of edits.set) headers.set(name, value);
}

export default {
  async fetch(request, env, ctx) {
    let g;
    try {
      g = getGuard(env);
    } catch (e) {
      // Fail closed: no policy, no traffic. The message names the bad field.
      console.error(String(e && e.message ? e.message : e));
      return jsonResponse(500, { error: "internal" });
    }
    // Background refresh of remote keys that are getting stale.
    startJwksFetches(g, ctx);

    const clientIp = request.headers.get("cf-connecting-ip");
    const verdict = await decide(g, env, ctx, request, clientIp);
    const exchange = verdict.exchange;
    if (verdict.action !== "forward") {
      // "respond" (or, never expected, "wait" again): answer without the origin.
      const reply = verdict.action === "respond" ? verdict : { status: 401, headers: [], body: EMPTY };
      finish(exchange, reply.status, env, ctx);
      pump(g, ctx);
      return replyResponse(reply);
    }

    const headers = new Headers(request.headers);
    headers.delete("host");
    applyEdits(headers, verdict);
    let body = request.body;
    if (verdict.inspectBody) {
      const read = await readThrough(request.body, (c, end) => exchange.requestChunk(c, end));
      if (read.reply) {
        finish(exchange, read.reply.status, env, ctx);
        pump(g, ctx);
        return replyResponse(read.reply);
      }
      body = read.bytes;
    }

    let upstream;
    try {
      upstream = await fetch(env.ORIGIN.replace(/\/+$/, "") + verdict.path, {
        method: request.method,
        headers,
        body: request.method === "GET" || request.method === "HEAD" ? undefined : body,
        redirect: "manual",
      });
    } catch (e) {
      console.error("chatguard: origin unreachable: " + String(e && e.message ? e.message : e));
      finish(exchange, 502, env, ctx);
      pump(g, ctx);
      return jsonResponse(502, { error: "bad_gateway" });
    }

    const plan = exchange.responseHeaders(upstream.status, [...upstream.headers]);
    const outHeaders = new Headers(upstream.headers);
    applyEdits(outHeaders, plan);
    const init = { status: upstream.status, statusText: upstream.statusText, headers: outHeaders };

    if (plan.mode === "pass" || upstream.body === null) {
      if (plan.mode !== "pass") {
        const last = exchange.responseChunk(EMPTY, true);
        if (!(last instanceof Uint8Array)) {
          finish(exchange, last.status, env, ctx);
          pump(g, ctx);
          return replyResponse(last);
        }
      }
      finish(exchange, upstream.status, env, ctx);
      pump(g, ctx);
      return new Response(upstream.body, init);
    }

    if (plan.mode === "hold") {
      const read = await readThrough(upstream.body, (c, end) => exchange.responseChunk(c, end));
      const status = read.reply ? read.reply.status : upstream.status;
      finish(exchange, status, env, ctx);
      pump(g, ctx);
      return read.reply ? replyResponse(read.reply) : new Response(read.bytes, init);
    }

    // "stream": redacted chunk by chunk with the engine's bounded holdback.
    const refused = () => new Error("chatguard: response body refused");
    const redact = new TransformStream({
      transform(chunk, controller) {
        const out = exchange.responseChunk(chunk, false);
        if (!(out instanceof Uint8Array)) {
          finish(exchange, out.status, env, ctx);
          controller.error(refused());
        } else if (out.length > 0) {
          controller.enqueue(out);
        }
      },
      flush(controller) {
        const out = exchange.responseChunk(EMPTY, true);
        if (!(out instanceof Uint8Array)) {
          finish(exchange, out.status, env, ctx);
          controller.error(refused());
          return;
        }
        if (out.length > 0) controller.enqueue(out);
        finish(exchange, upstream.status, env, ctx);
        pump(g, ctx);
      },
    });
    return new Response(upstream.body.pipeThrough(redact), init);
  },
};
