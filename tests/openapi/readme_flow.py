"""The README's main flow through a client generated from /openapi.json by openapi-python-client:
create a subscription, post an event, read its deliveries until the delivery succeeded.

Run by tests/tests/e2e/openapi_conformance.rs with the generated package `wasmhook_client` on
PYTHONPATH and WASMHOOK_URL, WASMHOOK_API_KEY and RECEIVER_URL set. It uses only what the
generator made from the document: typed models in, typed models (or ErrorBody) out.
"""

import os
import time

from wasmhook_client import AuthenticatedClient
from wasmhook_client.api.deliveries import get_delivery, list_event_deliveries
from wasmhook_client.api.events import create_event, get_event
from wasmhook_client.api.subscriptions import create_subscription, get_subscription
from wasmhook_client.models import (
    CreateSubscription,
    CreateSubscriptionHeaders,
    CreatedSubscription,
    DeliveryDetail,
    ErrorBody,
    Event,
    EventIn,
    EventInPayload,
    ListResponseDelivery,
    Subscription,
)


def expect(value, kind):
    """The generated call returns the documented model for the status it got."""
    assert isinstance(value, kind), f"expected {kind.__name__}, got {value!r}"
    return value


client = AuthenticatedClient(
    base_url=os.environ["WASMHOOK_URL"],
    token=os.environ["WASMHOOK_API_KEY"],
    raise_on_unexpected_status=True,
)

# Subscribe a URL to some event types; the response carries the signing secret.
sub = expect(
    create_subscription.sync(
        client=client,
        body=CreateSubscription(
            url=os.environ["RECEIVER_URL"],
            event_types=["message:created", "conversation:created"],
            headers=CreateSubscriptionHeaders.from_dict({"X-Team": "support"}),
        ),
    ),
    CreatedSubscription,
)
assert sub.secret.startswith("whsec_"), sub.secret
assert sub.status.value == "active", sub.status
expect(get_subscription.sync(client=client, id=sub.id), Subscription)

# Post an event: 202 once it is committed.
payload = EventInPayload.from_dict(
    {
        "body": "Hello world!",
        "created_at": "2020-09-01T23:00:00",
        "conversation_id": "conv-1",
        "customer_id": "cust-9",
    }
)
event = expect(
    create_event.sync(
        client=client,
        body=EventIn(type_="message:created", id="msg-123", payload=payload),
    ),
    Event,
)
assert event.id == "msg-123", event.id
expect(get_event.sync(client=client, id="msg-123"), Event)

# A mistake comes back as the documented error body.
missing = get_event.sync(client=client, id="no-such-event")
assert isinstance(missing, ErrorBody) and missing.error.code == "not_found", missing

# Read the event's deliveries until the one to our URL has succeeded.
deadline = time.monotonic() + 30
while True:
    page = expect(
        list_event_deliveries.sync(client=client, id="msg-123"), ListResponseDelivery
    )
    assert len(page.data) == 1, page
    delivery = page.data[0]
    assert delivery.subscription_id == sub.id, delivery
    if delivery.status.value == "succeeded":
        break
    assert time.monotonic() < deadline, f"still {delivery.status} after 30 s"
    time.sleep(0.05)

detail = expect(get_delivery.sync(client=client, id=delivery.id), DeliveryDetail)
assert detail.attempt_log[0].status_code == 200, detail.attempt_log
print(f"delivery succeeded: {delivery.id}")
