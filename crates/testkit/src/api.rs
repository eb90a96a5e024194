//! A small client for the gateway's HTTP API.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};

/// The gateway's public API at `base`, authenticating with `token`.
#[derive(Clone, Debug)]
pub struct Api {
    pub base: String,
    pub token: String,
    client: reqwest::Client,
}

/// A valid order body.
pub fn order_body(user_id: &str, product_id: &str, quantity: i64) -> Value {
    json!({ "user_id": user_id, "product_id": product_id, "quantity": quantity })
}

impl Api {
    /// The API at `base` (`http://host:port`, no trailing slash), each
    /// request timing out after 10 s.
    pub fn new(base: String, token: String) -> Self {
        Self::with_timeout(base, token, Duration::from_secs(10))
    }

    /// Like [`new`](Self::new), each request timing out after `timeout`
    /// unless it sets its own. Panics if no HTTP client can be built (no
    /// TLS or resolver backend), as `new` does.
    pub fn with_timeout(base: String, token: String, timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .expect("building an HTTP client");
        Self {
            base,
            token,
            client,
        }
    }

    /// The HTTP client the requests go through, with the same timeout, for
    /// requests elsewhere than the API (the services' admin ports).
    pub fn http(&self) -> &reqwest::Client {
        &self.client
    }

    /// A request with the bearer token set.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.unauthenticated(method, path).bearer_auth(&self.token)
    }

    pub fn unauthenticated(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base))
    }

    /// Sends a request and returns its status and JSON body (`Value::Null`
    /// when the body is not JSON).
    pub async fn send(request: RequestBuilder) -> (StatusCode, Value) {
        let response = request.send().await.expect("sending an HTTP request");
        let status = response.status();
        let bytes = response.bytes().await.expect("reading the response body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// `POST /orders`; returns the status and body.
    pub async fn post_order(&self, body: &Value) -> (StatusCode, Value) {
        Self::send(self.request(Method::POST, "/orders").json(body)).await
    }

    /// Places a valid order and returns its id, failing unless it is 201.
    pub async fn place_order(&self, body: &Value) -> String {
        let (status, reply) = self.post_order(body).await;
        assert_eq!(status, StatusCode::CREATED, "placing {body}: {reply}");
        reply["order_id"].as_str().expect("an order_id").to_owned()
    }

    /// `GET /orders/{id}`.
    pub async fn get_order(&self, order_id: &str) -> (StatusCode, Value) {
        Self::send(self.request(Method::GET, &format!("/orders/{order_id}"))).await
    }

    /// Waits until the order's status is `status` (`dead_lettered`, say,
    /// or `completed` after it), and returns the order as the gateway shows
    /// it.
    pub async fn wait_for_status(&self, order_id: &str, status: &str) -> Value {
        crate::wait_for(
            &format!("order {order_id} to be {status}"),
            crate::DEADLINE,
            || async {
                match self.get_order(order_id).await {
                    (StatusCode::OK, order) if order["status"] == status => Some(order),
                    _ => None,
                }
            },
        )
        .await
    }

    /// Waits until the order's status is no longer `created`, and returns
    /// the order as the gateway shows it.
    pub async fn wait_until_handled(&self, order_id: &str) -> Value {
        crate::wait_for(
            &format!("order {order_id} to be handled"),
            crate::DEADLINE,
            || async {
                match self.get_order(order_id).await {
                    (StatusCode::OK, order) if order["status"] != "created" => Some(order),
                    _ => None,
                }
            },
        )
        .await
    }
}
