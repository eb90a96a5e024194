//! When each request leaves: the load profiles as pure arithmetic.
//!
//! A profile is a target rate that changes over time, exactly as k6's
//! arrival-rate executors describe it: a start rate and a list of stages,
//! each moving the rate linearly to its target over its duration (a stage
//! whose target equals the current rate holds it). The number of requests
//! sent by time `t` is the integral of the rate, and request `i` (counting
//! from 0) leaves at the instant that integral reaches `i`. Nothing here
//! looks at a clock or at responses: that is what makes the load *open*.

use std::time::Duration;

/// One stage: the rate moves linearly to `target` (requests per second)
/// over `duration`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stage {
    pub target: f64,
    pub duration: Duration,
}

/// A target rate over time, from `start_rate` through each stage in turn.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub start_rate: f64,
    pub stages: Vec<Stage>,
}

/// One stage with where it starts: time, rate and requests sent before it.
#[derive(Debug, Clone, Copy)]
struct Segment {
    start: f64,
    length: f64,
    from: f64,
    to: f64,
    sent_before: f64,
}

impl Segment {
    fn area(&self) -> f64 {
        (self.from + self.to) / 2.0 * self.length
    }

    /// Rate change per second within the segment.
    fn slope(&self) -> f64 {
        if self.length > 0.0 {
            (self.to - self.from) / self.length
        } else {
            0.0
        }
    }

    /// Requests sent `s` seconds into the segment.
    #[cfg(test)]
    fn sends_within(&self, s: f64) -> f64 {
        self.from * s + self.slope() * s * s / 2.0
    }

    /// Seconds into the segment at which `x` requests of it have left: the
    /// root of `from * s + slope * s^2 / 2 = x`, in the form that stays
    /// accurate when the slope is zero or negative.
    fn time_of(&self, x: f64) -> f64 {
        if x <= 0.0 {
            return 0.0;
        }
        let root = (self.from * self.from + 2.0 * self.slope() * x)
            .max(0.0)
            .sqrt();
        let denominator = self.from + root;
        if denominator <= 0.0 {
            return self.length;
        }
        (2.0 * x / denominator).min(self.length)
    }
}

impl Schedule {
    /// `rate` requests per second for `duration` (k6's `constant-arrival-rate`).
    pub fn fixed(rate: f64, duration: Duration) -> Self {
        Self {
            start_rate: rate,
            stages: vec![Stage {
                target: rate,
                duration,
            }],
        }
    }

    /// `cycles` times: ramp up to `high`, hold it, ramp down to `low`, hold
    /// it; starting at `low`. The k6 script's `wave` profile.
    pub fn wave(low: f64, high: f64, cycles: u32, ramp: Duration, hold: Duration) -> Self {
        let mut stages = Vec::new();
        for _ in 0..cycles {
            for (target, duration) in [(high, ramp), (high, hold), (low, ramp), (low, hold)] {
                stages.push(Stage { target, duration });
            }
        }
        Self {
            start_rate: low,
            stages,
        }
    }

    /// `cycles` times through `pattern`, moving to each rate of it over
    /// `step`; starting at its first. The k6 script's `weekday` profile.
    pub fn weekday(pattern: &[f64], step: Duration, cycles: u32) -> Self {
        let mut stages = Vec::new();
        for _ in 0..cycles {
            for &target in pattern {
                stages.push(Stage {
                    target,
                    duration: step,
                });
            }
        }
        Self {
            start_rate: pattern.first().copied().unwrap_or(0.0),
            stages,
        }
    }

    fn segments(&self) -> Vec<Segment> {
        let mut segments = Vec::with_capacity(self.stages.len());
        let (mut start, mut from, mut sent_before) = (0.0, self.start_rate, 0.0);
        for stage in &self.stages {
            let segment = Segment {
                start,
                length: stage.duration.as_secs_f64(),
                from,
                to: stage.target,
                sent_before,
            };
            start += segment.length;
            sent_before += segment.area();
            from = stage.target;
            segments.push(segment);
        }
        segments
    }

    /// How long the schedule runs.
    pub fn duration(&self) -> Duration {
        self.stages.iter().map(|s| s.duration).sum()
    }

    /// The target rate at `t` seconds (0 after the end).
    pub fn rate_at(&self, t: f64) -> f64 {
        self.segments()
            .into_iter()
            .find(|s| t >= s.start && t < s.start + s.length)
            .map_or(0.0, |s| s.from + s.slope() * (t - s.start))
    }

    /// Requests due by `t` seconds: the integral of the rate from 0 to `t`.
    #[cfg(test)]
    pub fn sends_by(&self, t: f64) -> f64 {
        let mut total = 0.0;
        for segment in self.segments() {
            if t <= segment.start {
                break;
            }
            let within = (t - segment.start).min(segment.length);
            total = segment.sent_before + segment.sends_within(within);
        }
        total
    }

    /// How many requests the whole schedule sends.
    pub fn planned(&self) -> u64 {
        self.send_times().count() as u64
    }

    /// The send instants, in seconds from the start, in order.
    pub fn send_times(&self) -> SendTimes {
        SendTimes {
            segments: self.segments(),
            current: 0,
            next: 0,
        }
    }

    /// A short description, such as `fixed 300/s for 30s`.
    pub fn describe(&self) -> String {
        let duration = format_duration(self.duration());
        match self.stages.as_slice() {
            [stage] if stage.target == self.start_rate => {
                format!("fixed {}/s for {duration}", trim(stage.target))
            }
            stages => {
                let (low, high) = stages
                    .iter()
                    .fold((self.start_rate, self.start_rate), |(l, h), s| {
                        (l.min(s.target), h.max(s.target))
                    });
                format!(
                    "{} stages from {}/s to {}/s over {duration}",
                    stages.len(),
                    trim(low),
                    trim(high)
                )
            }
        }
    }
}

/// The send instants of a schedule, computed one after the other in
/// constant time each (a week-long schedule is never held in memory).
#[derive(Debug, Clone)]
pub struct SendTimes {
    segments: Vec<Segment>,
    current: usize,
    next: u64,
}

impl Iterator for SendTimes {
    type Item = f64;

    fn next(&mut self) -> Option<f64> {
        loop {
            let segment = self.segments.get(self.current)?;
            let x = self.next as f64 - segment.sent_before;
            if x < segment.area() {
                self.next += 1;
                return Some(segment.start + segment.time_of(x));
            }
            self.current += 1;
        }
    }
}

/// Parses a duration as k6 writes them: `10m`, `30s`, `1h`, `500ms`,
/// `1m30s`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return seconds_to_duration(seconds, text);
    }
    let mut total = 0.0;
    let mut rest = text;
    if rest.is_empty() {
        return Err("an empty duration".to_owned());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{text:?}: a number without a unit at the end"))?;
        let (number, after) = rest.split_at(digits);
        let number: f64 = number
            .parse()
            .map_err(|_| format!("{text:?}: expected a number before the unit"))?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let scale = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            other => return Err(format!("{text:?}: unknown unit {other:?} (ms, s, m, h)")),
        };
        total += number * scale;
        rest = next;
    }
    seconds_to_duration(total, text)
}

fn seconds_to_duration(seconds: f64, text: &str) -> Result<Duration, String> {
    if seconds.is_finite() && seconds >= 0.0 {
        Ok(Duration::from_secs_f64(seconds))
    } else {
        Err(format!("{text:?} is not a duration"))
    }
}

/// `90 s` as `1m30s`, `0.5 s` as `500ms`: the way durations are written in.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis < 1000 {
        return format!("{millis}ms");
    }
    let seconds = duration.as_secs_f64();
    let (h, m, s) = (
        (seconds / 3600.0).floor(),
        ((seconds % 3600.0) / 60.0).floor(),
        seconds % 60.0,
    );
    let mut out = String::new();
    if h > 0.0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0.0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0.0 || out.is_empty() {
        out.push_str(&format!("{}s", trim(s)));
    }
    out
}

/// A rate without a needless `.0`.
pub fn trim(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Runs a simulated clock over the schedule, one tick per `tick`
    /// seconds, and checks that the sends falling in each tick are the
    /// integral of the rate over it, to within the one request that a tick
    /// boundary can split. Returns the total.
    fn simulate(schedule: &Schedule, tick: f64) -> u64 {
        let mut times = schedule.send_times().peekable();
        let end = schedule.duration().as_secs_f64();
        let mut now = 0.0;
        let mut total = 0;
        let mut last = f64::NEG_INFINITY;
        while now < end {
            let until = now + tick;
            let mut in_tick = 0u64;
            while let Some(&t) = times.peek() {
                if t >= until {
                    break;
                }
                assert!(t >= last, "send times go forward: {t} after {last}");
                assert!(t < end, "a send at {t} s, after the end at {end} s");
                last = t;
                in_tick += 1;
                times.next();
            }
            let due = schedule.sends_by(until.min(end)) - schedule.sends_by(now);
            assert!(
                (in_tick as f64 - due).abs() <= 1.0 + 1e-6,
                "{in_tick} sends in [{now}, {until}) where {due} were due"
            );
            total += in_tick;
            now = until;
        }
        assert_eq!(times.next(), None, "no send after the end");
        total
    }

    #[test]
    fn fixed_sends_rate_times_duration_evenly_spaced() {
        let schedule = Schedule::fixed(20.0, secs(2));
        let times: Vec<f64> = schedule.send_times().collect();
        assert_eq!(times.len(), 40);
        for (i, t) in times.iter().enumerate() {
            assert!((t - i as f64 / 20.0).abs() < 1e-9, "send {i} at {t}");
        }
        assert_eq!(simulate(&schedule, 0.1), 40);
        // The k6 script's defaults: 5/s for 10m.
        let default = Schedule::fixed(5.0, secs(600));
        assert_eq!(simulate(&default, 1.0), 3000);
        assert_eq!(default.planned(), 3000);
        assert_eq!(default.describe(), "fixed 5/s for 10m");
    }

    #[test]
    fn a_fractional_rate_still_sends_on_time() {
        // 2.5/s for 3 s: 7.5 due, so sends at 0, 0.4, ... 2.8: 8 of them.
        let schedule = Schedule::fixed(2.5, secs(3));
        assert_eq!(simulate(&schedule, 0.5), 8);
    }

    #[test]
    fn wave_ramps_holds_and_comes_back() {
        // 10 -> 30 over 10 s (200), hold 30 for 20 s (600), 30 -> 10 over
        // 10 s (200), hold 10 for 20 s (200).
        let schedule = Schedule::wave(10.0, 30.0, 1, secs(10), secs(20));
        assert_eq!(schedule.duration(), secs(60));
        assert_eq!(simulate(&schedule, 1.0), 1200);
        assert_eq!(schedule.rate_at(5.0), 20.0);
        assert_eq!(schedule.rate_at(15.0), 30.0);
        assert_eq!(schedule.rate_at(45.0), 10.0);
        assert_eq!(schedule.rate_at(60.0), 0.0);
        // Two cycles send twice as much.
        let two = Schedule::wave(10.0, 30.0, 2, secs(10), secs(20));
        assert_eq!(simulate(&two, 0.25), 2400);
    }

    #[test]
    fn wave_defaults_of_the_k6_script() {
        // 6 cycles of 80 -> 300 over 2m, 8m at 300, 300 -> 80 over 2m, 8m
        // at 80: 22 800 + 144 000 + 22 800 + 38 400 per cycle.
        let schedule = Schedule::wave(80.0, 300.0, 6, secs(120), secs(480));
        assert_eq!(schedule.duration(), secs(6 * 20 * 60));
        assert_eq!(simulate(&schedule, 10.0), 6 * 228_000);
    }

    #[test]
    fn weekday_walks_the_pattern_and_starts_over() {
        // From 10: hold 10 (100), 10 -> 20 (150); second cycle 20 -> 10
        // (150), 10 -> 20 (150). 10 s per step.
        let schedule = Schedule::weekday(&[10.0, 20.0], secs(10), 2);
        assert_eq!(schedule.duration(), secs(40));
        assert_eq!(simulate(&schedule, 1.0), 550);
        assert_eq!(schedule.rate_at(25.0), 15.0);
    }

    #[test]
    fn weekday_defaults_of_the_k6_script() {
        let pattern = crate::load::DEFAULT_WEEKDAY_PATTERN
            .split(',')
            .map(|v| v.parse().unwrap())
            .collect::<Vec<f64>>();
        assert_eq!(pattern.len(), 26);
        let schedule = Schedule::weekday(&pattern, secs(300), 2);
        // Each step is a trapezoid of 300 s between the previous rate and
        // its own; the first starts from the pattern's first rate, the
        // second cycle's first from the pattern's last.
        let mut due = 0.0;
        let mut previous = pattern[0];
        for _ in 0..2 {
            for &rate in &pattern {
                due += (previous + rate) / 2.0 * 300.0;
                previous = rate;
            }
        }
        assert_eq!(simulate(&schedule, 5.0), due as u64);
    }

    #[test]
    fn durations_read_as_k6_writes_them() {
        assert_eq!(parse_duration("10m"), Ok(secs(600)));
        assert_eq!(parse_duration("30s"), Ok(secs(30)));
        assert_eq!(parse_duration("1m30s"), Ok(secs(90)));
        assert_eq!(parse_duration("1h"), Ok(secs(3600)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), Ok(secs(2)));
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(format_duration(secs(90)), "1m30s");
        assert_eq!(format_duration(secs(3600)), "1h");
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
    }
}
