//! Names every pillar uses for the same thing: the route of an HTTP request,
//! its method, the service and method of a gRPC call, a gRPC status code.
//! A metric label, a span name and a log field that describe one request
//! must spell it the same way, or the pillars cannot be joined.
//!
//! Every name here comes from a short list known in advance, never from
//! what a client sent: a client must not be able to invent label values or
//! span names.

use axum::extract::{MatchedPath, Request};
use axum::http::{self, Method, StatusCode};
use orders::pb::{gateway_callback_server, order_service_server};

/// The `route` of requests that matched no route: one value for every
/// unknown path, so a scan of random URLs adds no series.
pub const UNMATCHED: &str = "unmatched";

/// The route template a request matched, `/orders/{order_id}`, or
/// [`UNMATCHED`]. Never the raw path: that would be one value per order.
pub fn route(request: &Request) -> String {
    request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str)
        .to_owned()
}

/// The methods of RFC 9110 (and PATCH) by name; any other `other`: a client
/// may send any word as its method.
pub fn method_label(method: &Method) -> &'static str {
    static KNOWN: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::CONNECT,
        Method::OPTIONS,
        Method::TRACE,
        Method::PATCH,
    ];
    KNOWN
        .iter()
        .find(|known| *known == method)
        .map_or("other", Method::as_str)
}

/// `/orders.v1.OrderService/CreateOrder` as
/// (`orders.v1.OrderService`, `CreateOrder`); `(unknown, unknown)` for a
/// path of another shape.
pub fn split_grpc_path(path: &str) -> (&str, &str) {
    path.strip_prefix('/')
        .and_then(|path| path.split_once('/'))
        .unwrap_or(("unknown", "unknown"))
}

/// The methods of `orders.proto`, as (service, method).
const GRPC_METHODS: [(&str, &str); 4] = [
    (order_service_server::SERVICE_NAME, "CreateOrder"),
    (order_service_server::SERVICE_NAME, "GetOrder"),
    (order_service_server::SERVICE_NAME, "RecordResult"),
    (gateway_callback_server::SERVICE_NAME, "PushResult"),
];

/// The method a call to `path` names, as (service, method), or `(unknown,
/// unknown)` for a path that names none of ours: a client may send any
/// path, of any length, and must not be able to invent span names or
/// field values.
#[allow(dead_code, reason = "a gRPC span's name, from chapter 02 on")]
pub fn grpc_method(path: &str) -> (&'static str, &'static str) {
    let called = split_grpc_path(path);
    GRPC_METHODS
        .into_iter()
        .find(|known| *known == called)
        .unwrap_or(("unknown", "unknown"))
}

/// The method a call to `path` names, `orders.v1.OrderService/CreateOrder`,
/// or `unknown/unknown`, as [`grpc_method`] decides.
#[allow(dead_code, reason = "a gRPC span's name, from chapter 02 on")]
pub fn grpc_method_name(path: &str) -> &str {
    match grpc_method(path) {
        ("unknown", "unknown") => "unknown/unknown",
        // One of ours: the path is exactly `/service/method`.
        _ => &path[1..],
    }
}

/// The status of a unary call as a tonic server answers it: an error is in
/// the response headers (a "trailers-only" response); a success has none
/// there and sends `grpc-status: 0` in the trailers after the message. (A
/// streaming call could still fail in its trailers; this system has none.)
pub fn grpc_code<B>(response: &http::Response<B>) -> tonic::Code {
    match response.headers().get("grpc-status") {
        Some(code) => tonic::Code::from_bytes(code.as_bytes()),
        None if response.status() == StatusCode::OK => tonic::Code::Ok,
        None => tonic::Code::Unknown,
    }
}

/// A status code as gRPC's own libraries and the usual dashboards spell it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grpc_method_is_one_of_ours_or_unknown() {
        let long = format!("/{}", "x/".repeat(8_000));
        let cases = [
            (
                "/orders.v1.OrderService/CreateOrder",
                "orders.v1.OrderService/CreateOrder",
            ),
            (
                "/orders.v1.GatewayCallback/PushResult",
                "orders.v1.GatewayCallback/PushResult",
            ),
            ("/orders.v1.OrderService/DropTables", "unknown/unknown"),
            (
                "/orders.v1.OrderService/CreateOrder\u{202e}",
                "unknown/unknown",
            ),
            (long.as_str(), "unknown/unknown"),
        ];
        for (path, name) in cases {
            assert_eq!(grpc_method_name(path), name, "{path:.40}");
        }
    }
}
