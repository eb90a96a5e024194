//! The CPU profile: a sampler that records the stack of whichever thread
//! is running, 99 times per second of CPU time, rendered as a pprof
//! protobuf or as a flamegraph.

use std::time::Duration;

use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::response::Response;
use pprof::protos::Message as _;

use super::{
    BLOCKLIST, DEFAULT_CPU_SECONDS, HeapSampling, ProfileQuery, ProfilingError, SAMPLES_PER_SECOND,
    gzip, pprof_response, process_name, profilers_own, seconds, svg_response,
};

/// What a CPU profile is rendered as.
#[derive(Clone, Copy)]
enum CpuFormat {
    /// Gzipped pprof protobuf, for tools.
    Pprof,
    /// An SVG flamegraph, for people.
    Svg,
}

// ANCHOR: one_at_a_time
/// Held while this process takes a CPU profile. The sampler is process-wide
/// (one timer, one signal handler), so a second profile cannot run beside
/// the first. A second request gets 409 at once: `try_lock`, never `lock`,
/// since a request queued behind a minute-long profile would time out and
/// then sample another minute than the one it asked about.
static CPU_PROFILE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
// ANCHOR_END: one_at_a_time

// ANCHOR: cpu_profile
/// `GET /debug/pprof/profile?seconds=N[&format=svg]`.
pub(super) async fn cpu_profile(
    query: Result<Query<ProfileQuery>, QueryRejection>,
) -> Result<Response, ProfilingError> {
    let Query(query) = query?;
    let duration = seconds(query.seconds.as_deref(), DEFAULT_CPU_SECONDS)?;
    let format = match query.format.as_deref() {
        None | Some("pprof" | "proto") => CpuFormat::Pprof,
        Some("svg" | "flamegraph") => CpuFormat::Svg,
        Some(other) => {
            return Err(ProfilingError::BadRequest(format!(
                "format must be pprof or svg, not {other:?}"
            )));
        }
    };
    let body = profile_cpu(duration, format).await?;
    Ok(match format {
        CpuFormat::Pprof => pprof_response(body, "profile"),
        CpuFormat::Svg => svg_response(body),
    })
}

/// Samples the whole process's CPU for `duration` and renders what it saw.
///
/// The sampler is a timer that sends the process SIGPROF 99 times per
/// second of CPU time it uses, in whichever thread is running; the signal
/// handler records that thread's stack. Between the start and the report
/// this function only awaits a timer, so the runtime goes on serving
/// requests and handling orders: that is what gets sampled.
async fn profile_cpu(duration: Duration, format: CpuFormat) -> Result<Vec<u8>, ProfilingError> {
    let one_at_a_time = CPU_PROFILE.try_lock().map_err(|_| ProfilingError::Busy)?;
    // Starting reads the list of loaded libraries (for the blocklist) and
    // loads the binary's symbols, which takes a while in a debug build:
    // blocking work, for a blocking thread. The symbols stay loaded until
    // the report below has used them; jemalloc does not sample any of it.
    let sampling = tokio::task::spawn_blocking(|| {
        let _unsampled = HeapSampling::off_in_this_thread();
        pprof::ProfilerGuardBuilder::default()
            .frequency(SAMPLES_PER_SECOND)
            .blocklist(BLOCKLIST)
            .build()
    })
    .await
    .map_err(|e| ProfilingError::Failed(format!("starting the CPU profiler: {e}")))?
    .map_err(|e| match e {
        // Someone in this process started pprof without this route.
        pprof::Error::Running => ProfilingError::Busy,
        e => ProfilingError::Failed(format!("starting the CPU profiler: {e}")),
    })?;
    // Sleep without blocking a worker; on SIGTERM stop early with what was
    // sampled so far, so a profile never holds up a shutdown.
    tokio::select! {
        () = tokio::time::sleep(duration) => {}
        () = orders::shutdown::terminated() => {}
    }
    // Turning addresses into function names reads the binary's symbol
    // table: blocking work, for a blocking thread. The sampler and the lock
    // go with it, so even when the client hangs up now, the next profile
    // waits until this one is really over.
    tokio::task::spawn_blocking(move || {
        profilers_own(|| {
            let report = sampling
                .report()
                .frames_post_processor(without_sampler_frames)
                .build();
            drop(sampling);
            drop(one_at_a_time);
            let report = report.map_err(|e| ProfilingError::Failed(format!("reporting: {e}")))?;
            match format {
                CpuFormat::Pprof => encode_pprof(&report),
                CpuFormat::Svg => draw_flamegraph(&report, duration),
            }
        })
    })
    .await
    .map_err(|e| ProfilingError::Failed(format!("rendering the profile: {e}")))?
}

// ANCHOR_END: cpu_profile

// ANCHOR: pprof_format
/// Removes the sampler's own frames from the top of a stack. pprof drops
/// its signal handler's frame, but in a build where the stack walk is not
/// inlined into it (a debug build) the walk's own frames stay on top of
/// every stack and take all the "flat" time.
fn without_sampler_frames(frames: &mut pprof::Frames) {
    let sampler = |name: String| {
        ["backtrace::", "pprof::", "<pprof::"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
    };
    let own = frames
        .frames
        .iter()
        .take_while(|frame| frame.iter().any(|symbol| sampler(symbol.name())))
        .count();
    frames.frames.drain(..own);
}

/// The profile as Go serves it: the pprof `Profile` protobuf, gzipped.
/// pprof's protobuf types come from its own prost (0.12, not this
/// workspace's 0.14), so the encoding goes through its re-exported
/// `pprof::protos::Message`.
fn encode_pprof(report: &pprof::Report) -> Result<Vec<u8>, ProfilingError> {
    let profile = report
        .pprof()
        .map_err(|e| ProfilingError::Failed(format!("converting to pprof: {e}")))?;
    gzip(&profile.encode_to_vec())
}
// ANCHOR_END: pprof_format

// ANCHOR: flamegraph
/// `GET /debug/pprof/flamegraph?seconds=N`: the CPU profile drawn. Each box
/// is a function; its width is its share of the samples, the functions it
/// called stacked above it. The widest boxes at the top are where the time
/// went.
pub(super) async fn flamegraph(
    query: Result<Query<ProfileQuery>, QueryRejection>,
) -> Result<Response, ProfilingError> {
    let Query(query) = query?;
    let duration = seconds(query.seconds.as_deref(), DEFAULT_CPU_SECONDS)?;
    Ok(svg_response(profile_cpu(duration, CpuFormat::Svg).await?))
}

fn draw_flamegraph(report: &pprof::Report, duration: Duration) -> Result<Vec<u8>, ProfilingError> {
    let title = format!("CPU of {} over {} s", process_name(), duration.as_secs());
    if report.data.is_empty() {
        // No frames, no flamegraph: say so in an image, not an empty body.
        let svg = format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="800" height="60"><text x="10" y="35" font-family="monospace">{title}: no samples, the process used no CPU</text></svg>"#
        );
        return Ok(svg.into_bytes());
    }
    let mut options = pprof::flamegraph::Options::default();
    options.title = title;
    options.count_name = "samples".to_owned();
    let mut svg = Vec::new();
    report
        .flamegraph_with_options(&mut svg, &mut options)
        .map_err(|e| ProfilingError::Failed(format!("drawing the flamegraph: {e}")))?;
    Ok(svg)
}
// ANCHOR_END: flamegraph
