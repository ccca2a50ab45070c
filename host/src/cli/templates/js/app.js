// {{name}}: a wasmhook plugin written in JavaScript (built with ComponentizeJS).
//
// It tags every customer message with the plugin's name and a greeting from its configuration
// (`greeting`, default "hello") and leaves every other event unchanged.
//
// Bindings follow ComponentizeJS conventions: the exported interface `handler` is the object
// below; WIT records are objects with camelCase fields; variants are `{ tag, val }`; throwing
// a value with a `payload` property returns `err(payload)`.

import { configGet, log } from 'wasmhook:plugin/host@0.1.0';

class HandlerError extends Error {
  constructor(message, retryable) {
    super(message);
    this.payload = { message, retryable };
  }
}

export const handler = {
  handle(event) {
    if (event.eventType !== 'message:created' || event.causation) {
      return { tag: 'keep' };
    }
    let payload;
    try {
      payload = JSON.parse(event.payload);
    } catch (e) {
      throw new HandlerError(`payload is not JSON: ${e.message}`, false);
    }
    if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) {
      throw new HandlerError('payload is not a JSON object', false);
    }
    if (payload.sender?.type !== 'source_contact') {
      return { tag: 'keep' };
    }
    payload.tagged_by = '{{name}}';
    payload.greeting = configGet('greeting') ?? 'hello';
    log('info', `tagged ${event.id}`);
    return { tag: 'replace', val: JSON.stringify(payload) };
  },
};
