"""Customer features for the support chatbot (team customer-care): Feast definitions.

Two feature views of one entity, `customer` (join key `customer_id`):
- customer_profile: the plan a customer is on and how long they have been with us, from the
  nightly CRM export (batch; materialized into the online store on the feature store's schedule);
- support_activity: open tickets and recent ticket history, pushed by the ticketing system as
  tickets change (push source; its batch source keeps the history for training sets).

`support_chat_context` is what the chatbot's prompt gets (stacks/usecases/support-chatbot.yaml).
Offline data lives under $TANDEM_FEATURES_OFFLINE (the feature store's S3 prefix in a cluster,
a local folder in tests); `tandem plan` checks these definitions offline (docs/feature-store.md).
"""

import os
from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Float64, Int64, String

OFFLINE = os.environ.get("TANDEM_FEATURES_OFFLINE", "data").rstrip("/")

customer = Entity(
    name="customer",
    join_keys=["customer_id"],
    value_type=ValueType.STRING,
    description="A customer account (the help widget's signed-in user)",
)

customer_profile_source = FileSource(
    name="customer_profile_source",
    path=f"{OFFLINE}/customer_care/customer_profile.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
)

customer_profile = FeatureView(
    name="customer_profile",
    entities=[customer],
    ttl=timedelta(days=2),
    schema=[
        Field(name="customer_id", dtype=String),
        Field(name="plan_tier", dtype=String),
        Field(name="tenure_months", dtype=Int64),
        Field(name="lifetime_value_usd", dtype=Float64),
        Field(name="region", dtype=String),
    ],
    online=True,
    source=customer_profile_source,
    tags={"team": "customer-care"},
)

support_activity_source = FileSource(
    name="support_activity_source",
    path=f"{OFFLINE}/customer_care/support_activity.parquet",
    timestamp_field="event_timestamp",
)

support_activity_push = PushSource(
    name="support_activity_push",
    batch_source=support_activity_source,
)

support_activity = FeatureView(
    name="support_activity",
    entities=[customer],
    ttl=timedelta(hours=6),
    schema=[
        Field(name="customer_id", dtype=String),
        Field(name="open_tickets", dtype=Int64),
        Field(name="last_ticket_hours_ago", dtype=Float64),
        Field(name="csat_last_30d", dtype=Float64),
    ],
    online=True,
    source=support_activity_push,
    tags={"team": "customer-care"},
)

support_chat_context = FeatureService(
    name="support_chat_context",
    features=[
        customer_profile[["plan_tier", "tenure_months"]],
        support_activity[["open_tickets", "last_ticket_hours_ago"]],
    ],
    description="What the support chatbot's prompt knows about the customer",
)
