"""Status codes of the gateway (SPEC section 3)."""

from __future__ import annotations

from types import MappingProxyType

KNOWN_CODES = MappingProxyType(
    {
        101: "Accepted",
        102: "Queued",
        103: "Funded",
        104: "Refunded",
        110: "Sending",
        111: "DeliveredToGateway",
        112: "DeliveredToCarrier",
        113: "DeliveredToGSM",
        114: "QueuedAtGateway",
        201: "DeliveredToHandset",
        202: "Expired",
        203: "Canceled",
        402: "InsufficientFunds",
        403: "SenderRejected",
    }
)
# Groups whose codes end a message's life: on equal timestamps they beat every other code.
FINAL_GROUPS = (2, 4, 5)
GROUPS = MappingProxyType({1: "Info", 2: "Success", 4: "Rejection", 5: "Error"})
