//! Every way the API refuses a request: the status, a JSON error, and
//! nothing stored or published.

use std::time::Duration;

use crate::{Api, Subject, order_body};
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::json;

/// One bad request and the status it must get.
struct Case {
    name: &'static str,
    request: fn(&Api) -> reqwest::RequestBuilder,
    status: StatusCode,
}

fn post_json(api: &Api, body: serde_json::Value) -> reqwest::RequestBuilder {
    api.request(Method::POST, "/orders").json(&body)
}

fn post_raw(api: &Api, body: &'static str) -> reqwest::RequestBuilder {
    api.request(Method::POST, "/orders")
        .header("content-type", "application/json")
        .body(body)
}

const CASES: &[Case] = &[
    Case {
        name: "no Authorization header",
        request: |api| {
            api.unauthenticated(Method::POST, "/orders")
                .json(&order_body("1", "A", 1))
        },
        status: StatusCode::UNAUTHORIZED,
    },
    Case {
        name: "wrong token",
        request: |api| {
            api.unauthenticated(Method::POST, "/orders")
                .bearer_auth("not-the-token")
                .json(&order_body("1", "A", 1))
        },
        status: StatusCode::UNAUTHORIZED,
    },
    Case {
        name: "not a bearer token",
        request: |api| {
            api.unauthenticated(Method::POST, "/orders")
                .basic_auth("user", Some(&api.token))
                .json(&order_body("1", "A", 1))
        },
        status: StatusCode::UNAUTHORIZED,
    },
    Case {
        name: "malformed JSON",
        request: |api| post_raw(api, r#"{"user_id": "1001", "product_id": "#),
        status: StatusCode::BAD_REQUEST,
    },
    Case {
        name: "not JSON at all",
        request: |api| post_raw(api, "user_id=1001"),
        status: StatusCode::BAD_REQUEST,
    },
    Case {
        name: "no JSON content type",
        request: |api| {
            api.request(Method::POST, "/orders")
                .body(r#"{"user_id":"1","product_id":"A","quantity":1}"#)
        },
        status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
    },
    Case {
        name: "missing quantity",
        request: |api| post_json(api, json!({"user_id": "1001", "product_id": "A001"})),
        status: StatusCode::UNPROCESSABLE_ENTITY,
    },
    Case {
        name: "quantity of the wrong type",
        request: |api| {
            post_json(
                api,
                json!({"user_id": "1001", "product_id": "A001", "quantity": "two"}),
            )
        },
        status: StatusCode::UNPROCESSABLE_ENTITY,
    },
    Case {
        name: "fractional quantity",
        request: |api| {
            post_json(
                api,
                json!({"user_id": "1001", "product_id": "A001", "quantity": 1.5}),
            )
        },
        status: StatusCode::UNPROCESSABLE_ENTITY,
    },
    Case {
        name: "user_id of the wrong type",
        request: |api| {
            post_json(
                api,
                json!({"user_id": 1001, "product_id": "A001", "quantity": 1}),
            )
        },
        status: StatusCode::UNPROCESSABLE_ENTITY,
    },
    Case {
        name: "empty user_id",
        request: |api| post_json(api, order_body("", "A001", 1)),
        status: StatusCode::UNPROCESSABLE_ENTITY,
    },
    Case {
        name: "product_id over 64 characters",
        request: |api| post_json(api, order_body("1001", &"p".repeat(65), 1)),
        status: StatusCode::UNPROCESSABLE_ENTITY,
    },
    Case {
        name: "control character in user_id",
        request: |api| post_json(api, order_body("10\n01", "A001", 1)),
        status: StatusCode::UNPROCESSABLE_ENTITY,
    },
    Case {
        name: "ANSI escape in product_id",
        request: |api| post_json(api, order_body("1001", "\u{1b}[31mA001", 1)),
        status: StatusCode::UNPROCESSABLE_ENTITY,
    },
    Case {
        name: "zero-width space as user_id (U+200B)",
        request: |api| post_json(api, order_body("\u{200b}", "A001", 1)),
        status: StatusCode::UNPROCESSABLE_ENTITY,
    },
    Case {
        name: "right-to-left override in user_id (U+202E)",
        request: |api| post_json(api, order_body("1001\u{202e}", "A001", 1)),
        status: StatusCode::UNPROCESSABLE_ENTITY,
    },
    Case {
        name: "byte-order mark in product_id (U+FEFF)",
        request: |api| post_json(api, order_body("1001", "\u{feff}A001", 1)),
        status: StatusCode::UNPROCESSABLE_ENTITY,
    },
    Case {
        name: "line separator in user_id (U+2028)",
        request: |api| post_json(api, order_body("10\u{2028}01", "A001", 1)),
        status: StatusCode::UNPROCESSABLE_ENTITY,
    },
    Case {
        name: "paragraph separator in user_id (U+2029)",
        request: |api| post_json(api, order_body("10\u{2029}01", "A001", 1)),
        status: StatusCode::UNPROCESSABLE_ENTITY,
    },
    Case {
        name: "isolates in product_id (U+2066..U+2069)",
        request: |api| {
            post_json(
                api,
                order_body("1001", "\u{2066}A\u{2067}0\u{2068}01\u{2069}", 1),
            )
        },
        status: StatusCode::UNPROCESSABLE_ENTITY,
    },
    Case {
        name: "quantity zero",
        request: |api| post_json(api, order_body("1001", "A001", 0)),
        status: StatusCode::UNPROCESSABLE_ENTITY,
    },
    Case {
        name: "quantity over 1000",
        request: |api| post_json(api, order_body("1001", "A001", 1001)),
        status: StatusCode::UNPROCESSABLE_ENTITY,
    },
    Case {
        name: "negative quantity",
        request: |api| post_json(api, order_body("1001", "A001", -1)),
        status: StatusCode::UNPROCESSABLE_ENTITY,
    },
    Case {
        name: "body over 16 KiB",
        request: |api| {
            let mut body = order_body("1001", "A001", 1);
            body["padding"] = json!("x".repeat(17 * 1024));
            post_json(api, body)
        },
        status: StatusCode::PAYLOAD_TOO_LARGE,
    },
    Case {
        name: "unknown route",
        request: |api| api.request(Method::GET, "/no-such-route"),
        status: StatusCode::NOT_FOUND,
    },
    Case {
        name: "unknown route, no token",
        request: |api| api.unauthenticated(Method::POST, "/orders/1/cancel"),
        status: StatusCode::NOT_FOUND,
    },
    Case {
        name: "wrong method",
        request: |api| api.request(Method::DELETE, "/orders"),
        status: StatusCode::METHOD_NOT_ALLOWED,
    },
    Case {
        name: "unknown order",
        request: |api| api.request(Method::GET, "/orders/00000000-0000-0000-0000-000000000000"),
        status: StatusCode::NOT_FOUND,
    },
    Case {
        name: "reading an order without a token",
        request: |api| {
            api.unauthenticated(Method::GET, "/orders/00000000-0000-0000-0000-000000000000")
        },
        status: StatusCode::UNAUTHORIZED,
    },
];

pub async fn rejected_requests_get_a_json_error_and_leave_no_trace(subject: &Subject) {
    let system = subject.start().await;
    let nats = system.nats_client().await;
    let mut published = nats.subscribe(orders::queue::ORDERS_CREATED).await.unwrap();
    nats.flush().await.unwrap();

    let mut failures = Vec::new();
    for case in CASES {
        let (status, body) = Api::send((case.request)(&system.api)).await;
        let has_error = body["error"].as_str().is_some_and(|e| !e.is_empty());
        if status != case.status || !has_error {
            failures.push(format!(
                "{}: expected {} with a JSON error, got {status} {body}",
                case.name, case.status
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // A valid order as a fence: messages arrive in order, so if it is the
    // first message seen, no rejected request published anything.
    let fence = system.api.place_order(&order_body("1001", "A001", 1)).await;
    let first = tokio::time::timeout(Duration::from_secs(10), published.next())
        .await
        .expect("the valid order is published")
        .unwrap();
    let payload: serde_json::Value = serde_json::from_slice(&first.payload).unwrap();
    assert_eq!(payload["order_id"], fence.as_str());
    assert_eq!(
        system.stored_orders().await,
        1,
        "only the valid order is stored"
    );
}
