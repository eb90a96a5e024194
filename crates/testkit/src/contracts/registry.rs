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
                    Completed whatever the work said, or the detail is not stored with the result",
                section: "00-baseline.md#task-at-least-once-handling",
            }
            a_repeated_callback_changes_nothing {
                claim: "a repeated callback for an order is answered and changes nothing",
                diagnosis: "every result is stored, not only the first one per order (RecordResult \
                    must not overwrite one): a redelivery overwrites the result",
                section: "00-baseline.md#gateway-again-the-callback",
            }
            any_gateway_answers_for_any_order {
                claim: "with two gateways and two tasks, either gateway (and a restarted one) \
                    answers with the result of any order, whichever gateway the callback reached",
                diagnosis: "a result is kept in the memory of the gateway that received the \
                    callback instead of being stored with the order in logic (RecordResult), or \
                    GET /orders/{id} does not take the status from logic's answer",
                section: "00-baseline.md#many-gateways-many-tasks",
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
                diagnosis: "a check runs after the order is stored or published, a refusal has \
                    the wrong status (400 for bad JSON, 422 for bad fields, 401, 413) or no JSON \
                    error body, or an id with an invisible format or separator character \
                    (U+200B, U+202E, U+FEFF, U+2028) is accepted",
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
            an_order_out_of_deliveries_is_dead_lettered_then_reprocessed_once {
                claim: "an order whose every delivery failed is moved to the dead letters and \
                    marked dead_lettered, and reprocessing completes it once",
                diagnosis: "the last delivery is nak'ed like the others (JetStream then drops it \
                    in silence) instead of being moved to the dead-letter stream, logic does not \
                    follow the dead letters, or a result cannot replace dead_lettered",
                section: "00-baseline.md#dead-letters",
            }
            a_retry_after_a_504_with_its_idempotency_key_gets_one_order {
                claim: "a client told 504 retries with its Idempotency-Key and gets one order, \
                    stored after the deadline it missed, never twice",
                diagnosis: "logic commits an order after the gateway's deadline (pass the \
                    deadline on with the call, and check it before the commit), or the key is \
                    not stored with the order, so a retry makes a second one",
                section: "00-baseline.md#retries-deadlines-and-idempotency-keys",
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
            prometheus_counts_every_error_in_the_slo_ratio {
                claim: "Prometheus, scraping the services, counts every error in the SLO's error \
                    ratio, the first ones included",
                diagnosis: "a series the rules read appears only with its first increment, which \
                    rate() and increase() cannot see: create the label sets the rules, alerts \
                    and dashboards read at 0 when the service starts",
                section: "01-metrics.md#series-that-exist-from-the-start",
            }
            counters_agree_after_a_504_and_its_retry {
                claim: "after a 504 and its retry, logic's orders_created_total and the \
                    gateway's orders_completed_total both say one order",
                diagnosis: "logic counts an order it did not store (before the commit, or for a \
                    retry that returned the earlier order), or stores one past the deadline \
                    without counting it",
                section: "01-metrics.md#business-events",
            }
            a_dead_lettered_message_is_counted {
                claim: "a message whose every delivery failed counts once in \
                    mq_dead_lettered_total, its retries in mq_redeliveries_total",
                diagnosis: "the dead-letter path settles the delivery without telling the \
                    metrics: finish its handling as dead_letter, which counts \
                    mq_consumed_total{status=\"dead_letter\"} and mq_dead_lettered_total",
                section: "01-metrics.md#nats-jetstream",
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
                claim: "a traceparent that is not valid by W3C Trace Context (00-1-2-01, a sign, \
                    a short field, uppercase, a zero id, version ff, sent twice) starts a fresh \
                    trace and fails nothing; a later version is continued",
                diagnosis: "the SDK's lenient parser trusted as it is (it takes short, signed \
                    and padded ids), the header read with get instead of get_all so a second \
                    one passes, or a failed extraction fails the request",
                section: "02-logs.md#reading-a-traceparent-strictly",
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
            the_last_failed_delivery_is_an_error_not_a_redelivery {
                claim: "when the last delivery of a message fails, task writes one error line \
                    with the order's id and trace id, never \"redelivery scheduled\"",
                diagnosis: "the last delivery is logged like every other failed one, a warning \
                    that promises a redelivery JetStream will never make: check the delivery \
                    against the consumer's limit and log the dead letter at error",
                section: "02-logs.md#what-logs-answer",
            }
        }
    }
    3 {
        traces {
            one_order_as_its_spans_show_it {
                claim: "one order's spans, HTTP, gRPC client and server, SQLite, with their \
                    attributes and error statuses, as the snapshot shows",
                diagnosis: "a span missing or misnamed, an attribute off the semantic conventions, \
                    an error status missing on a failure (or set on logic's NotFound, an answer), \
                    or the order in more traces than the snapshot: compare the two trees",
                section: "03-grpc-tracing.md#what-you-see",
            }
            otel_service_name_wins_in_the_spans {
                claim: "OTEL_SERVICE_NAME names the service in its spans and in the log field \
                    `service` alike",
                diagnosis: "service.name set by hand over what the SDK reads from the \
                    environment, or the log field `service` taken from the subcommand instead \
                    of the one resolved name: the join key between the pillars breaks",
                section: "03-grpc-tracing.md#the-otel_-variables",
            }
            otel_resource_attributes_arrive_as_given {
                claim: "OTEL_RESOURCE_ATTRIBUTES arrives as given: its service.instance.id is \
                    kept, its service.name names spans and lines when OTEL_SERVICE_NAME is unset",
                diagnosis: "the program's own attributes (a random service.instance.id, the \
                    subcommand as service.name) set after the SDK's detectors, so they replace \
                    what the operator said",
                section: "03-grpc-tracing.md#the-otel_-variables",
            }
            otel_sdk_disabled_or_exporter_none_sends_no_span {
                claim: "with OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none the order \
                    completes and no span is sent, not even at shutdown",
                diagnosis: "the Rust SDK does not read these two: the exporter is built \
                    whatever they say; read them where the tracer provider is made",
                section: "03-grpc-tracing.md#the-otel_-variables",
            }
            the_trace_context_crosses_grpc_both_ways {
                claim: "the trace context crosses gRPC both ways: each server span is the child \
                    of its client span, in its trace",
                diagnosis: "each service in its own trace: no propagator installed, the client \
                    does not inject, or the server span is not parented because set_parent runs \
                    after the span was entered; a parent other than the client span: the \
                    interceptor injects outside the client span",
                section: "03-grpc-tracing.md#inject-a-client-interceptor",
            }
            sigterm_sends_the_spans_still_queued {
                claim: "a service stopped with SIGTERM still sends its last spans",
                diagnosis: "spans missing after exit: no shutdown or flush of the tracer \
                    provider, so the batch processor's queue is lost; call Telemetry::shutdown \
                    once the server has stopped",
                section: "03-grpc-tracing.md#sending-the-last-spans-at-exit",
            }
            a_malformed_traceparent_starts_a_fresh_trace {
                claim: "a traceparent that is not valid by W3C Trace Context starts a fresh \
                    root trace, and the request goes through; a later version is continued",
                diagnosis: "an invalid context taken over as the parent (the SDK's lenient \
                    parser without the W3C checks, or a header sent twice read as one), or a \
                    failed extraction that fails or slows the request",
                section: "02-logs.md#reading-a-traceparent-strictly",
            }
            an_oversized_tracestate_is_dropped_and_the_order_succeeds {
                claim: "a tracestate beyond W3C's limits (32 members, 512 characters) is \
                    dropped, never forwarded, and the order succeeds",
                diagnosis: "the tracestate forwarded as it came: the next hop's HTTP/2 server \
                    refuses the header list (431, seen as 502), or every message carries \
                    kilobytes of headers; check it where the context is extracted",
                section: "02-logs.md#reading-a-traceparent-strictly",
            }
            a_sampler_of_zero_keeps_only_the_traces_callers_keep {
                claim: "a sampler of 0 keeps no trace a service starts, and every trace a caller \
                    keeps",
                diagnosis: "a sampler that is not parent-based, OTEL_TRACES_SAMPLER not read, or \
                    traceresponse not giving the sampled flag",
                section: "03-grpc-tracing.md#sampling",
            }
            with_no_collector_orders_complete_as_fast_as_ever {
                claim: "with no collector, orders complete as fast as ever and each service \
                    warns once",
                diagnosis: "spans sent on the request's path (a simple span processor instead of \
                    the batch one), or every failed batch logged, or the SDK's errors on stderr",
                section: "03-grpc-tracing.md#pitfalls",
            }
            a_collector_away_is_logged_once_and_its_return_once {
                claim: "a collector away is logged once, and its return once, with the spans lost",
                diagnosis: "export failures logged per batch instead of on a change, or the \
                    return and the number of lost spans never logged",
                section: "03-grpc-tracing.md#pitfalls",
            }
            rust_log_trace_traces_no_library {
                claim: "RUST_LOG=trace shows the libraries' lines, and no span but the \
                    services' own",
                diagnosis: "the exporter tracing its own exports: spans of h2, hyper, tonic or \
                    tower let through when RUST_LOG allows them; filter them out of the tracing \
                    layer whatever the level",
                section: "03-grpc-tracing.md#pitfalls",
            }
        }
    }
    4 {
        messaging {
            by_default_one_order_is_one_trace_across_nats {
                claim: "one order is one trace: the consumer span is the producer span's child \
                    and links to it",
                diagnosis: "the consumer span neither child of nor linked to the producer: the \
                    context is not injected into the message's headers or not extracted from \
                    them (no propagator, or set_parent after the consumer span was entered)",
                section: "04-nats-tracing.md#what-you-see",
            }
            the_message_carries_a_traceparent_on_the_wire {
                claim: "the message carries a traceparent naming the order's trace and the \
                    publish span",
                diagnosis: "no headers sent with the publish, or headers built before the \
                    producer span started, so they name CreateOrder's span",
                section: "04-nats-tracing.md#inject-into-the-messages-headers",
            }
            every_line_about_an_order_carries_one_trace_id {
                claim: "every line about an order, in every service, carries the order's trace id",
                diagnosis: "task's lines written outside the consumer span, or the context not \
                    carried over NATS",
                section: "04-nats-tracing.md#pitfalls",
            }
            with_trace_relation_link_each_message_is_a_trace_that_links {
                claim: "with --trace-relation link each delivery is the root of its own trace, \
                    linked to the publish",
                diagnosis: "the switch is ignored: the consumer span still takes the producer as \
                    its parent",
                section: "04-nats-tracing.md#child-or-link",
            }
            a_link_points_at_the_producer_span {
                claim: "the link names the producer span's trace id and span id exactly",
                diagnosis: "the link built from the current span instead of the extracted \
                    context, or TRACE_RELATION not read from the environment",
                section: "04-nats-tracing.md#child-or-link",
            }
            each_delivery_is_a_span_of_its_own {
                claim: "each delivery is a span of its own in the order's trace, numbered; a \
                    failed one is an error",
                diagnosis: "one span for every delivery, the delivery count not read from the \
                    message, or a nak not recorded as an error",
                section: "04-nats-tracing.md#redelivery-one-span-per-delivery",
            }
            a_malformed_traceparent_in_a_message_starts_a_fresh_trace {
                claim: "a message with a malformed traceparent starts a fresh trace, unlinked, \
                    and is handled",
                diagnosis: "an invalid context used as parent or link (the W3C checks not \
                    installed, or the NATS extractor without get_all, so a header sent twice \
                    passes), or a failed extraction that fails the delivery",
                section: "04-nats-tracing.md#pitfalls",
            }
            an_order_republished_by_the_outbox_continues_its_trace {
                claim: "an order republished by the outbox, after NATS was down, is published \
                    and handled in the trace of the request that placed it",
                diagnosis: "the outbox publishes in a span of its own, the root of a new trace: \
                    store the creating span's traceparent with the row and make the outbox's \
                    span its child (continue_stored_trace)",
                section: "04-nats-tracing.md#the-outbox-a-context-stored-with-the-row",
            }
        }
    }
    5 {
        profiling {
            a_cpu_profile_under_load_names_the_packing_work {
                claim: "a CPU profile under load is gzipped pprof and names the packing work",
                diagnosis: "not gzipped pprof, other sample types, or the profiler's own frames \
                    (backtrace::) on top of every stack instead of the work",
                section: "05-profiling.md#the-cpu-profile",
            }
            a_flamegraph_is_svg_naming_the_packing_work {
                claim: "a flame graph is SVG with a box for the packing work",
                diagnosis: "not well-formed SVG, the wrong content type, or a graph of another \
                    profile than the one just taken",
                section: "05-profiling.md#the-flame-graph",
            }
            a_heap_profile_decodes_with_space_in_use {
                claim: "each service serves a heap profile of the space in use",
                diagnosis: "no heap profile: the system allocator instead of jemalloc, or \
                    prof:true missing from malloc_conf (the endpoint answers 501)",
                section: "05-profiling.md#the-heap-profile",
            }
            the_runtime_view_and_the_index_describe_the_process {
                claim: "the runtime view describes the workers, and the index lists every profile",
                diagnosis: "a field or a worker missing from the runtime view, or an endpoint \
                    missing from the index",
                section: "05-profiling.md#the-runtime-view",
            }
            profiles_are_never_on_the_public_port {
                claim: "profiles are served on the admin port only, never on the public one",
                diagnosis: "a profile endpoint on the public port: the profiling routes merged \
                    into the API's router instead of the admin router",
                section: "05-profiling.md#the-routes-on-the-admin-port-only",
            }
            bad_or_out_of_range_parameters_get_400 {
                claim: "a bad or out-of-range parameter gets a JSON 400",
                diagnosis: "a parameter clamped or ignored instead of refused, or refused \
                    without a JSON error",
                section: "05-profiling.md#errors-and-bounds",
            }
            a_second_cpu_profile_at_the_same_time_gets_409 {
                claim: "a second CPU profile at the same time gets a 409 at once",
                diagnosis: "two profilers allowed at once, or the second waits for the first \
                    instead of being refused",
                section: "05-profiling.md#one-cpu-profile-at-a-time",
            }
            orders_keep_completing_while_a_profile_runs {
                claim: "orders keep completing while a profile runs",
                diagnosis: "the profile blocks a runtime worker (std::thread::sleep, or the \
                    report built on the runtime): wait with tokio and build on the blocking pool",
                section: "05-profiling.md#overhead-and-safety",
            }
            ten_profiles_leave_the_memory_where_it_was {
                claim: "heap profiles, and CPU and heap profiles after the first CPU profile, \
                    leave a service's resident memory within 10 MiB of where it was",
                diagnosis: "the profiler keeps what it used: the symbolizer's cache of debug \
                    information (drop it after each profile) or freed pages jemalloc holds on \
                    to (purge them)",
                section: "05-profiling.md#what-the-profiler-costs",
            }
            a_heap_profile_shows_the_service_not_the_profiler {
                claim: "a heap profile taken after other profiles shows the service's memory, \
                    not the profiler's",
                diagnosis: "the profiler's own allocations are sampled: the CPU sampler's table \
                    and the symbolizer's cache top the heap profile; turn jemalloc's sampling \
                    off in the thread that does the profiler's work",
                section: "05-profiling.md#what-the-profiler-costs",
            }
        }
    }
    6 {
        production {
            help_documents_every_setting_and_the_otel_variables {
                claim: "every --help documents every flag with its variable, the OTEL_* \
                    variables, RUST_LOG, health and shutdown, and never shows the token",
                diagnosis: "a flag without `env`, a setting left out of the help text, or the \
                    token shown as a flag's default value",
                section: "final.md#configuration",
            }
            the_top_level_help_lists_the_subcommands {
                claim: "the top-level help lists gateway, logic, task and all",
                diagnosis: "a subcommand hidden or renamed",
                section: "final.md#configuration",
            }
            a_bad_flag_is_refused_with_the_usage {
                claim: "a bad flag is refused at start with the usage, exit code 2",
                diagnosis: "a value checked only later, when it is used, or a bad value replaced \
                    by the default",
                section: "final.md#configuration",
            }
            readiness_follows_nats_and_liveness_does_not {
                claim: "readiness follows NATS, liveness does not",
                diagnosis: "/readyz does not ask the NATS connection, or /healthz does, so a \
                    NATS outage restarts every service",
                section: "final.md#health-and-readiness",
            }
            readyz_answers_503_once_a_shutdown_begins {
                claim: "from SIGTERM on, /readyz answers 503 while the service keeps serving",
                diagnosis: "readiness not turned off at the signal, or the service stops serving \
                    before --shutdown-delay-ms is over",
                section: "final.md#health-and-readiness",
            }
            the_shutdown_is_logged_with_trace_ids {
                claim: "each service logs its shutdown, in a span",
                diagnosis: "the shutdown lines written outside any span, so without trace_id",
                section: "final.md#graceful-shutdown",
            }
            sigterm_on_the_gateway_under_load_drains_without_a_5xx {
                claim: "SIGTERM on the gateway under load answers every request it read, no 5xx, \
                    and sends their spans",
                diagnosis: "the server dropped instead of shut down gracefully, or telemetry \
                    shut down before the requests in flight ended",
                section: "final.md#graceful-shutdown",
            }
            sigterm_on_logic_under_load_loses_no_accepted_order {
                claim: "SIGTERM on logic under load answers every call it received and loses no \
                    accepted order",
                diagnosis: "calls in flight cut off at the signal instead of drained, or an order \
                    stored but not published and never swept once logic is back",
                section: "final.md#graceful-shutdown",
            }
            sigterm_on_task_finishes_the_messages_in_hand_and_loses_none {
                claim: "SIGTERM on task finishes and acks the messages in hand, and pulls no more",
                diagnosis: "the consumer dropped with messages in hand, or still pulling after \
                    the signal, so deliveries are redone or lost",
                section: "final.md#graceful-shutdown",
            }
            every_metric_the_dashboards_and_rules_read_is_exposed {
                claim: "every metric the dashboards and alerts read is exposed",
                diagnosis: "a metric renamed or removed in the code and not in config/, or the \
                    other way round",
                section: "stack.md#what-is-checked-without-docker",
            }
            lokis_derived_field_finds_the_trace_id_of_real_log_lines {
                claim: "Loki's derived field finds the trace id of every real log line",
                diagnosis: "the log line's trace_id field renamed or reformatted, or the regex in \
                    the data source changed",
                section: "stack.md#from-one-pillar-to-the-other",
            }
            the_compose_file_builds_the_services_from_this_dockerfile {
                claim: "docker compose builds the services from final/Dockerfile",
                diagnosis: "the compose file points at another Dockerfile, or it moved",
                section: "final.md#the-dockerfile",
            }
            faults_switch_on_the_admin_port_only_and_refuse_bad_input {
                claim: "every fault is off at start, listed on its service's admin port and in \
                    fault_setting; a bad switch gets 400 and a JSON error and changes nothing; \
                    the public port has no such route",
                diagnosis: "the fault routes merged into the public router, a value taken \
                    without its range checked, or a refused switch applied in part",
                section: "final.md#faults-for-the-incidents",
            }
            an_error_burst_refuses_orders_until_switched_off {
                claim: "error_burst makes logic refuse orders (503 to the client), says so in a \
                    warning line, the gauge and the spans; off, orders are created again",
                diagnosis: "the fault checked after the order is stored, or its switch not \
                    reported in every pillar",
                section: "final.md#faults-for-the-incidents",
            }
            slow_writes_show_in_the_insert_span_until_switched_off {
                claim: "slow_writes adds its delay inside the INSERT span, marked with the \
                    fault; off, inserts are quick again",
                diagnosis: "the delay added outside the query's span, so the trace blames the \
                    wrong step",
                section: "final.md#faults-for-the-incidents",
            }
            failing_callbacks_redeliver_until_switched_off {
                claim: "failing_callbacks makes the gateway refuse results: task counts \
                    redeliveries, the order stays created; off, the next delivery completes it",
                diagnosis: "the refusal chosen per call rather than per order, or answered with \
                    a code task does not retry",
                section: "final.md#faults-for-the-incidents",
            }
            a_lost_context_splits_the_trace_until_switched_off {
                claim: "lost_context makes task's handling a trace of its own, with no link; \
                    off, an order is one trace again",
                diagnosis: "the context still injected somewhere else, or task not starting a \
                    root span when a message has none",
                section: "final.md#faults-for-the-incidents",
            }
            a_memory_leak_grows_the_gateway_until_switched_off {
                claim: "memory_leak grows the gateway's resident memory with each order; off, \
                    it stops growing",
                diagnosis: "the leaked memory never touched (so never resident), or kept after \
                    the fault is off",
                section: "final.md#faults-for-the-incidents",
            }
            a_cpu_hog_slows_the_packing_until_switched_off {
                claim: "cpu_hog makes task's packing many times slower, in the handle span, \
                    marked with the fault; off, it is quick again",
                diagnosis: "the extra work optimised away, or done outside the handling's span",
                section: "final.md#faults-for-the-incidents",
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::promises;
    use crate::FINAL;

    #[test]
    fn each_chapter_keeps_the_earlier_promises_and_adds_its_own() {
        let all = promises(FINAL);
        let mut names: Vec<&str> = all.iter().map(|p| p.test).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all.len(), "a test named twice");
        for chapter in 0..=FINAL {
            let these = promises(chapter);
            assert_eq!(these[..], all[..these.len()], "chapter {chapter}");
            assert!(these.iter().any(|p| p.lesson == chapter), "{chapter}");
        }
        for p in &all {
            assert!(!p.claim.is_empty() && !p.diagnosis.is_empty(), "{}", p.test);
            assert!(!p.claim.contains("  ") && !p.diagnosis.contains("  "));
        }
    }

    /// mdBook's id of a heading: lower case, spaces as dashes, only
    /// letters, digits, `-` and `_` kept.
    fn anchor(heading: &str) -> String {
        heading
            .trim()
            .chars()
            .filter_map(|c| match c {
                c if c.is_alphanumeric() || c == '_' || c == '-' => Some(c.to_ascii_lowercase()),
                c if c.is_whitespace() => Some('-'),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn every_section_is_a_heading_of_the_book() {
        let book = crate::stack::repo_root().join("book");
        for p in promises(FINAL) {
            let (page, id) = p.section.split_once('#').expect("page#anchor");
            let text = std::fs::read_to_string(book.join(page))
                .unwrap_or_else(|e| panic!("{}: book/{page}: {e}", p.test));
            let found = text
                .lines()
                .filter_map(|line| line.strip_prefix('#'))
                .any(|heading| anchor(heading.trim_start_matches('#')) == id);
            assert!(found, "{}: no heading #{id} in book/{page}", p.test);
        }
    }
}
