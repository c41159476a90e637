//! Triggers: commands a node runs on a cron schedule with no client attached, until disabled,
//! leaving bounded history and output instead of a live PTY.
//!
//! - [`spec`]: checking what `cmdop trigger add` asks for;
//! - [`record`]: what is stored of a trigger (spec, state, history);
//! - [`scheduler`]: the sans-IO state machine (fires, overlap, missed runs, timeouts);
//! - [`output`]: a run's output, the last bytes kept and everything counted;
//! - [`clock`]: wall-clock time for the scheduler (sped up for tests, faked in unit tests);
//! - [`runner`]: starting a run's process (`sh -c`, own process group, merged output);
//! - [`store`]: a record file per trigger and an output file per finished run under
//!   `$CMDOP_HOME/triggers/`, written atomically; [`writer`]: those writes, off the runtime;
//! - [`service`]: the driver task and the shared state; [`requests`]: the control requests.
//!
//! Flow: a control request (or the driver's wake-up) goes to the scheduler with `now`; the
//! scheduler returns actions; the service starts or signals runs through the runner; each
//! run's end goes back to the scheduler; every change is stored.

pub mod clock;
pub mod output;
pub mod record;
pub mod requests;
pub mod runner;
pub mod scheduler;
pub mod service;
pub mod spec;
pub mod store;
pub mod writer;

pub use service::Triggers;

#[cfg(test)]
pub(crate) mod tests_support {
    //! What the trigger tests share.

    use cmdop_proto::TriggerSpec;

    /// Unix milliseconds of a UTC time.
    pub fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> u64 {
        let days = days_from_civil(y, mo, d);
        ((days * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60) * 1000) as u64
    }

    /// Days since 1970-01-01 (Howard Hinnant's algorithm).
    fn days_from_civil(y: i32, m: u32, d: u32) -> i64 {
        let y = i64::from(if m <= 2 { y - 1 } else { y });
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(m);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// A spec in UTC with the defaults of `cmdop trigger add`.
    pub fn spec(name: &str, schedule: &str) -> TriggerSpec {
        TriggerSpec {
            name: name.into(),
            schedule: schedule.into(),
            zone: Some("UTC".into()),
            shell: "echo hi".into(),
            missed: Default::default(),
            starting_deadline_ms: None,
            concurrency: Default::default(),
            timeout_ms: None,
            jitter_ms: 0,
            keep_runs: 20,
            keep_output: 64 * 1024,
            env: Vec::new(),
            cwd: None,
        }
    }
}
