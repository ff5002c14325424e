//! Events serialize to JSON with the JS SDK's callback field names.
#![cfg(feature = "serde")]

use hummer_channel::client::{ConnectionReason, ConnectionState, Event, RequestId};
use hummer_channel::{ErrorCode, Message, ServiceError, Uid};
use serde_json::json;

#[test]
fn events_use_the_js_sdk_field_names() {
    let mut message = Message::new("text", "hi");
    message.app_extras.insert("k".into(), "v".into());
    let e = Event::MessageFromUser {
        from_uid: Uid(u64::MAX),
        message,
        timestamp_ms: 5,
    };
    let v = serde_json::to_value(&e).unwrap();
    assert_eq!(v["event"], "MessageFromUser");
    assert_eq!(
        v["fromUid"],
        json!(u64::MAX.to_string()),
        "uids are decimal strings"
    );
    assert_eq!(v["message"]["type"], "text");
    assert_eq!(v["message"]["appExtras"], json!({"k": "v"}));
    assert_eq!(v["timestampMs"], 5);
    let back: Event = serde_json::from_value(v).unwrap();
    assert_eq!(back, e);

    let state = serde_json::to_value(Event::ConnectionStateChanged {
        state: ConnectionState::Reconnecting,
        reason: ConnectionReason::LoginTimeout,
    })
    .unwrap();
    assert_eq!(state["state"], "RECONNECTING");
    assert_eq!(state["reason"], "LOGIN_TIMEOUT");

    let failed = serde_json::to_value(Event::Completed {
        request: RequestId(3),
        result: Err(ServiceError::new(ErrorCode::USER_NOT_IN_CHANNEL, "no")),
    })
    .unwrap();
    assert_eq!(
        failed["result"]["Err"],
        json!({"rescode": 5101, "msg": "no"})
    );
}
