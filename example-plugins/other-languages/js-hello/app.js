// js-hello: a wasmhook plugin written in JavaScript (built with ComponentizeJS).
//
// For every event it returns `replace` with the payload plus two fields:
// `"seen_by": "javascript"` and `"greeting"` (the config value `greeting`, default
// `"hello from javascript"`), and writes one info line to the plugin log. A payload that
// is not a JSON object fails the delivery with a non-retryable error.
//
// Bindings follow ComponentizeJS conventions: the exported interface `handler` is the
// `handler` object below; WIT records are objects with camelCase fields; variants are
// `{ tag, val }`; enums are their kebab-case strings. Throwing a value with a `payload`
// property returns `err(payload)` from a function whose WIT result is a `result`.

import { configGet, log } from 'wasmhook:plugin/host@0.1.0';

class HandlerError extends Error {
  constructor(message, retryable) {
    super(message);
    this.payload = { message, retryable };
  }
}

export const handler = {
  handle(event) {
    let payload;
    try {
      payload = JSON.parse(event.payload);
    } catch (e) {
      throw new HandlerError(`js-hello: payload is not JSON: ${e.message}`, false);
    }
    if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) {
      throw new HandlerError('js-hello: payload is not a JSON object', false);
    }

    payload.seen_by = 'javascript';
    payload.greeting = configGet('greeting') ?? 'hello from javascript';
    log('info', `js-hello saw ${event.eventType} ${event.id}`);
    return { tag: 'replace', val: JSON.stringify(payload) };
  },
};
