//! The promises, written once: by lesson, then by module, in the order the
//! book teaches them. Each names its contract (`module` and function), what
//! holds, the likely mistake when it does not, and where the book explains
//! it.

define_promises! { $
    0 {
        flow {
            an_order_is_created_then_completed {
                claim: "an order is created, then completed by task's callback",
                diagnosis: "a service does not start or cannot reach the next one: the gateway does \
                    not call logic, logic does not publish, or task never calls PushResult back",
                section: "00-baseline.md#following-one-order",
            }
            an_order_for_a_sold_out_product_fails {
                claim: "an order for a sold-out product ends up failed, with the reason",
                diagnosis: "task's outcome or its detail is lost on the way back: PushResult sends \
                    Completed whatever the work said, or the gateway does not store the detail",
                section: "00-baseline.md#task-at-least-once-handling",
            }
            a_repeated_callback_changes_nothing {
                claim: "a repeated callback for an order is answered and changes nothing",
                diagnosis: "the gateway records every PushResult instead of the first one per order: \
                    a redelivery overwrites the result",
                section: "00-baseline.md#gateway-again-the-callback",
            }
            fifty_concurrent_orders_each_complete_once {
                claim: "fifty concurrent orders each get an id, complete, and are published once",
                diagnosis: "shared state under concurrency: ids reused, a lock held across an await, \
                    or the outbox publishing an order twice without its order id as message id",
                section: "00-baseline.md#logic-store-first-then-publish",
            }
        }
        rejections {
            rejected_requests_get_a_json_error_and_leave_no_trace {
                claim: "every bad request gets its status and a JSON error, and nothing is stored \
                    or published",
                diagnosis: "a check runs after the order is stored or published, or a refusal has \
                    the wrong status (400 for bad JSON, 422 for bad fields, 401, 413) or no JSON \
                    error body",
                section: "00-baseline.md#validation-and-error-statuses",
            }
        }
        faults {
            gateway_answers_503_when_logic_is_down {
                claim: "with logic down, the gateway answers 503 at once",
                diagnosis: "a refused connection is retried until the deadline, or its gRPC status \
                    Unavailable is answered as 500 or 504",
                section: "00-baseline.md#validation-and-error-statuses",
            }
            gateway_answers_504_when_logic_is_slower_than_the_deadline {
                claim: "with logic stuck, the gateway answers 504 when its deadline expires",
                diagnosis: "the call to logic has no deadline, or DeadlineExceeded is answered as \
                    something else than 504",
                section: "00-baseline.md#validation-and-error-statuses",
            }
            no_accepted_order_is_lost_while_nats_restarts {
                claim: "every order accepted while NATS restarts is completed",
                diagnosis: "logic publishes before it stores, or nothing republishes an order whose \
                    publish failed: the outbox sweep is missing or never sets the published flag",
                section: "00-baseline.md#logic-store-first-then-publish",
            }
            orders_survive_task_crashing_with_unacked_messages {
                claim: "orders survive task crashing while it holds unacked messages",
                diagnosis: "task acks a message before the gateway confirmed the callback, so a \
                    crash loses the order",
                section: "00-baseline.md#task-at-least-once-handling",
            }
        }
        launcher {
            all_runs_the_system_and_sigterm_stops_every_process {
                claim: "`all` starts everything, its banner says how to use each pillar so far, \
                    and SIGTERM stops every process it started",
                diagnosis: "a banner line of the chapter's lesson is missing (the scrape URLs, jq, \
                    the OTLP endpoint, TRACE_RELATION), a log line goes to stdout that is not \
                    JSON, or a child outlives the launcher",
                section: "00-baseline.md#the-process-model",
            }
        }
        progress {
            progress_for_one_order {
                claim: "the progress report of one order shows the pillars of the chapter",
                diagnosis: "a pillar of this chapter or an earlier one is missing for a service: \
                    see which row says no, and the promises of that lesson above",
                section: "introduction.md#progress",
            }
        }
    }
    1 {
        metrics {
            each_service_serves_its_metric_families {
                claim: "each service serves /metrics on its admin port, as Prometheus text, with \
                    the families the dashboards read",
                diagnosis: "no /metrics on the admin port, not Prometheus text, or a family \
                    missing, renamed or with other labels: a metric not registered in the \
                    registry that /metrics serves, or not touched yet",
                section: "01-metrics.md#what-each-service-shows",
            }
            counts_match_what_the_system_did {
                claim: "every counter and histogram counts exactly what the system did",
                diagnosis: "a count in the wrong place or made twice (a retry, a duplicate \
                    callback counted as completed), a series not created at zero, or a \
                    histogram observed under other labels than its counter",
                section: "01-metrics.md#the-families",
            }
            unknown_paths_and_methods_add_no_series {
                claim: "requests to unknown paths, methods and gRPC services add no series",
                diagnosis: "a label built from the raw path or method, so series grow with every \
                    random path a client sends: label with the matched route template, and \
                    `unmatched` or `other` for the rest",
                section: "01-metrics.md#pitfalls",
            }
            a_call_to_a_logic_that_is_down_counts_as_unavailable {
                claim: "a call to a logic that is down counts as Unavailable, its request as 503",
                diagnosis: "the client call is counted only when logic answers: a refused \
                    connection is not counted, or under another code",
                section: "01-metrics.md#grpc-clients",
            }
            a_call_past_the_deadline_counts_as_deadline_exceeded {
                claim: "a call past its deadline counts as DeadlineExceeded, its request as 504",
                diagnosis: "the call's future is dropped at the deadline before it records \
                    anything: record in a Drop guard, as grpc_client does",
                section: "01-metrics.md#grpc-clients",
            }
        }
    }
    2 {
        logs {
            every_line_of_every_service_is_a_json_object_with_a_trace_id {
                claim: "every line on stdout is one JSON object with timestamp, level, service, \
                    target, message, trace_id and span_id; nothing goes to stderr",
                diagnosis: "a line that is not one JSON object (a println!, the default text \
                    formatter, a panic), or a line written outside every span, so without \
                    trace_id: write it inside the request's span or the startup span",
                section: "02-logs.md#pitfalls",
            }
            one_order_in_the_logs_of_each_service {
                claim: "one order's lines, in as many traces as the chapter joins: four in 02, two \
                    once gRPC carries the context, one once NATS does",
                diagnosis: "a line about the order is missing or has other fields than the \
                    snapshot, or the order is in more traces than the chapter joins: from 03 on, \
                    each service in its own trace means the context does not cross gRPC (no \
                    propagator installed, or the client does not inject); from 04 on, NATS",
                section: "02-logs.md#what-you-see",
            }
            the_gateway_continues_a_trace_from_a_valid_traceparent {
                claim: "the gateway continues a client's valid traceparent, in a child span",
                diagnosis: "set_parent is called after the request's span was entered (its error, \
                    AlreadyStarted, thrown away by `let _`), or the header is never extracted: \
                    the lines get a new trace id",
                section: "02-logs.md#pitfalls",
            }
            a_malformed_traceparent_starts_a_fresh_trace_and_fails_nothing {
                claim: "a malformed traceparent starts a fresh trace and fails nothing",
                diagnosis: "an invalid context is taken over as the parent (an all-zero or garbage \
                    trace id), or a failed extraction fails the request",
                section: "02-logs.md#sending-a-trace-id",
            }
            hostile_input_cannot_break_a_line {
                claim: "hostile input cannot break a line: quotes, newlines and escapes stay in \
                    their field",
                diagnosis: "a line written by hand instead of through serde_json, an id with a \
                    control character accepted, or a route taken from the raw path",
                section: "02-logs.md#pitfalls",
            }
            no_output_has_the_token_or_the_authorization_header {
                claim: "no output holds the API token or the Authorization header",
                diagnosis: "headers or the whole request logged (`?request`, `?headers`, \
                    #[instrument] without skip), or a library's debug lines let through",
                section: "02-logs.md#pitfalls",
            }
            rust_log_sets_the_level {
                claim: "RUST_LOG sets the level, and the lines left keep their trace id",
                diagnosis: "RUST_LOG filters the spans too, so warnings are written outside any \
                    span and lose their trace_id; or a 503 is not logged at error with its cause \
                    at warn in the same trace",
                section: "02-logs.md#choosing-what-is-logged-rust_log",
            }
        }
    }
}
