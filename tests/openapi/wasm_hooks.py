"""schemathesis hooks: plugin uploads are `application/wasm`, raw bytes like octet-stream."""

import schemathesis

schemathesis.serializer.alias("application/wasm", "application/octet-stream")
