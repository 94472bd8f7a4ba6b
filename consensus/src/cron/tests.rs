//! Unit tests of crons: schedules, firing, catch-up and bounds.

use super::*;
use crate::{ClusterState, Command, JobState, Response};
use chrono::TimeZone;

fn spec(name: &str, overlap: Overlap) -> CronSpec {
    CronSpec {
        name: name.into(),
        schedule: "* * * * *".into(),
        tz: "UTC".into(),
        overlap,
        catch_up_ms: CATCH_UP_MS_DEFAULT,
        target: CronTarget::Job(Box::new(JobSpec::new("tick", &["true"]))),
    }
}

struct Log {
    s: ClusterState,
    i: u64,
}

impl Log {
    fn new() -> Log {
        Log {
            s: ClusterState::new(),
            i: 0,
        }
    }
    fn op(&mut self, at_ms: u64, op: CronOp) -> Response {
        self.i += 1;
        self.s.apply(self.i, &Command::Cron { at_ms, op })
    }
    fn fire(&mut self, name: &str, scheduled: &[u64]) -> Response {
        let at = *scheduled.last().unwrap();
        self.op(
            at,
            CronOp::Fire {
                name: name.into(),
                late: None,
                scheduled: scheduled.to_vec(),
            },
        )
    }
    fn end(&mut self, job: JobId) {
        self.i += 1;
        self.s.apply(
            self.i,
            &Command::CancelJob {
                at_ms: 0,
                job,
                reason: "test".into(),
            },
        );
        assert!(self.s.job(job).unwrap().state.is_final());
    }
    fn cron(&self, name: &str) -> &Cron {
        self.s.crons().get("default", name).unwrap()
    }
    fn outcomes(&self, name: &str) -> Vec<FireOutcome> {
        self.cron(name)
            .history
            .iter()
            .map(|f| f.outcome.clone())
            .collect()
    }
}

use FireOutcome::*;

#[test]
fn a_fire_is_decided_once_and_skip_waits_for_the_run_to_end() {
    let mut l = Log::new();
    assert_eq!(
        l.op(1_000, CronOp::Create(Box::new(spec("s", Overlap::Skip)))),
        Response::Done
    );
    assert!(matches!(
        l.op(1_001, CronOp::Create(Box::new(spec("s", Overlap::Skip)))),
        Response::Rejected(_)
    ));
    assert_eq!(l.fire("s", &[60_000]), Response::Done);
    let job = l.s.job(1).unwrap();
    assert_eq!(job.spec.env[CRON_ENV_NAME], "s");
    assert_eq!(job.spec.env[CRON_ENV_SCHEDULED], "60000");
    // A second leader's copy of the same fire, and an older one: nothing happens.
    assert!(matches!(l.fire("s", &[60_000]), Response::Ignored { .. }));
    assert!(matches!(l.fire("s", &[30_000]), Response::Ignored { .. }));
    assert_eq!(l.s.job_count(), 1);
    // Job 1 still pending: skipped.
    l.fire("s", &[120_000]);
    l.end(1);
    l.fire("s", &[180_000]);
    assert_eq!(
        l.outcomes("s"),
        vec![
            Launched(super::Launched::Job(1)),
            Skipped(SkipReason::Overlap),
            Launched(super::Launched::Job(2))
        ]
    );
    let c = l.cron("s");
    assert_eq!(
        (c.launched, c.skipped, c.last_scheduled_ms),
        (2, 1, 180_000)
    );
}

#[test]
fn queue_runs_a_held_fire_once_the_run_ends_and_allow_overlaps() {
    let mut l = Log::new();
    l.op(0, CronOp::Create(Box::new(spec("q", Overlap::Queue))));
    l.fire("q", &[60_000, 120_000]);
    assert_eq!(
        l.outcomes("q"),
        vec![Launched(super::Launched::Job(1)), Queued]
    );
    let run = |l: &mut Log| {
        l.op(
            130_000,
            CronOp::RunQueued {
                name: "q".into(),
                scheduled_ms: 120_000,
            },
        )
    };
    assert!(
        matches!(run(&mut l), Response::Ignored { .. }),
        "job 1 runs"
    );
    l.end(1);
    assert_eq!(run(&mut l), Response::Done);
    assert!(matches!(run(&mut l), Response::Ignored { .. }), "once");
    assert_eq!(l.s.job(2).unwrap().spec.env[CRON_ENV_SCHEDULED], "120000");
    assert!(l.cron("q").queued.is_empty());
    assert_eq!(l.s.job(2).unwrap().state, JobState::Pending);

    l.op(0, CronOp::Create(Box::new(spec("a", Overlap::Allow))));
    l.fire("a", &[60_000, 120_000]);
    assert_eq!(
        l.cron("a").launched,
        2,
        "allow launches while the first runs"
    );
}

#[test]
fn late_fires_are_one_skipped_range_and_a_pause_owes_nothing() {
    let mut l = Log::new();
    l.op(0, CronOp::Create(Box::new(spec("p", Overlap::Allow))));
    let late = LateFires {
        first_ms: 60_000,
        last_ms: 300_000,
        count: 5,
    };
    l.op(
        400_000,
        CronOp::Fire {
            name: "p".into(),
            late: Some(late),
            scheduled: vec![360_000],
        },
    );
    let c = l.cron("p");
    assert_eq!((c.launched, c.skipped), (1, 5));
    assert_eq!(c.history[0].count, 5);
    assert_eq!(c.history[0].through_ms, 300_000);
    assert_eq!(c.history[0].outcome, Skipped(SkipReason::Late));
    // Paused: fires change nothing; resumed at 1_000_000: the schedule goes on from there.
    l.op(
        500_000,
        CronOp::SetPaused {
            name: "p".into(),
            paused: true,
        },
    );
    assert!(matches!(l.fire("p", &[420_000]), Response::Ignored { .. }));
    l.op(
        1_000_000,
        CronOp::SetPaused {
            name: "p".into(),
            paused: false,
        },
    );
    assert_eq!(l.cron("p").last_scheduled_ms, 1_000_000);
    assert!(matches!(l.fire("p", &[960_000]), Response::Ignored { .. }));

    // Crons are in the hash and the snapshot.
    let bytes = l.s.to_snapshot();
    let back = ClusterState::from_snapshot(&bytes).unwrap();
    assert_eq!(back.crons(), l.s.crons());
    assert_eq!(back.hash(), l.s.hash());
    let before = l.s.hash();
    l.op(2_000_000, CronOp::Delete { name: "p".into() });
    assert!(l.s.crons().get("default", "p").is_none());
    assert_ne!(l.s.hash(), before);
}

#[test]
fn cron_specs_are_bounded() {
    let s = spec("ok", Overlap::Skip);
    s.validate().unwrap();
    for (change, want) in [
        (
            Box::new(|s: &mut CronSpec| s.name = "a b".into()) as Box<dyn Fn(&mut CronSpec)>,
            "CRON_NAME_BYTES_MAX",
        ),
        (
            Box::new(|s: &mut CronSpec| s.catch_up_ms = 0),
            "CATCH_UP_MS_MAX",
        ),
        (
            Box::new(|s: &mut CronSpec| s.tz = "x".repeat(65)),
            "CRON_TZ_BYTES_MAX",
        ),
        (
            Box::new(|s: &mut CronSpec| {
                if let CronTarget::Job(j) = &mut s.target {
                    j.idempotency_key = Some("k".into());
                }
            }),
            "idempotency key",
        ),
    ] {
        let mut bad = s.clone();
        change(&mut bad);
        let e = bad.validate().unwrap_err();
        assert!(e.to_string().contains(want), "{e}");
    }
}

fn ms(tz: chrono_tz::Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> u64 {
    tz.with_ymd_and_hms(y, mo, d, h, mi, 0)
        .earliest()
        .unwrap()
        .timestamp_millis() as u64
}

fn utc(s: &str) -> u64 {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap()
        .timestamp_millis() as u64
}

/// Europe/Paris springs forward on 2026-03-29 at 02:00 (to 03:00) and falls back on
/// 2026-10-25 at 03:00 (to 02:00). With a fixed clock: a daily 02:30 fire runs once
/// right after the gap and once in the repeated hour; an every-15-minutes fire skips
/// the gap and runs in both passes of the repeated hour.
#[test]
fn dst_gaps_and_repeats_follow_the_zone() {
    let paris = chrono_tz::Europe::Paris;
    let daily = Schedule::parse("30 2 * * *", "Europe/Paris").unwrap();
    // Spring: from the evening before to the evening of the change.
    let fires = due(
        &daily,
        ms(paris, 2026, 3, 28, 12, 0),
        ms(paris, 2026, 3, 29, 12, 0),
        CATCH_UP_MS_MAX,
    );
    assert_eq!(
        fires.scheduled,
        vec![utc("2026-03-29T01:00:00Z")],
        "03:00 CEST, once"
    );
    // Autumn: 02:30 happens twice; the fire runs once, at the first (CEST).
    let fires = due(
        &daily,
        ms(paris, 2026, 10, 24, 12, 0),
        ms(paris, 2026, 10, 25, 12, 0),
        CATCH_UP_MS_MAX,
    );
    assert_eq!(fires.scheduled, vec![utc("2026-10-25T00:30:00Z")]);

    let quarter = Schedule::parse("*/15 * * * *", "Europe/Paris").unwrap();
    let spring = due(
        &quarter,
        utc("2026-03-29T00:40:00Z"), // 01:40 CET
        utc("2026-03-29T01:20:00Z"), // 03:20 CEST
        CATCH_UP_MS_MAX,
    );
    assert_eq!(
        spring.scheduled,
        vec![
            utc("2026-03-29T00:45:00Z"), // 01:45 CET
            utc("2026-03-29T01:00:00Z"), // 03:00 CEST: 02:xx does not exist
            utc("2026-03-29T01:15:00Z"),
        ]
    );
    let autumn = due(
        &quarter,
        utc("2026-10-24T23:50:00Z"), // 01:50 CEST
        utc("2026-10-25T01:10:00Z"), // 02:10 CET
        CATCH_UP_MS_MAX,
    );
    // Real time, every 15 minutes, through both passes of 02:00-03:00.
    let want: Vec<u64> = (0..5)
        .map(|i| utc("2026-10-25T00:00:00Z") + i * 15 * 60_000)
        .collect();
    assert_eq!(autumn.scheduled, want);
}

#[test]
fn old_fires_are_late_and_counted_the_rest_run() {
    let every_minute = Schedule::parse("* * * * *", "UTC").unwrap();
    let start = utc("2026-01-01T00:00:00Z");
    // Down for 10 minutes; a catch-up window of 3 minutes.
    let d = due(
        &every_minute,
        start,
        start + 10 * 60_000 + 30_000,
        3 * 60_000,
    );
    assert_eq!(
        d.late,
        Some(LateFires {
            first_ms: start + 60_000,
            last_ms: start + 7 * 60_000,
            count: 7
        })
    );
    assert_eq!(
        d.scheduled,
        vec![start + 8 * 60_000, start + 9 * 60_000, start + 10 * 60_000]
    );
    // Nothing is due before its time, and a decided fire is not due again.
    assert!(due(&every_minute, start, start + 59_999, 60_000).is_empty());
    assert!(due(&every_minute, start + 60_000, start + 60_000, 60_000).is_empty());
    // A clock that jumped back decides nothing twice.
    assert!(due(&every_minute, start + 10 * 60_000, start, 60_000).is_empty());
}

#[test]
fn schedules_and_zones_are_checked() {
    assert!(Schedule::parse("*/5 * * * *", "Europe/Paris").is_ok());
    assert!(Schedule::parse("@daily", "UTC").is_ok());
    let e = Schedule::parse("61 * * * *", "UTC").unwrap_err();
    assert_eq!(e.field, "schedule");
    let e = Schedule::parse("* * * * *", "Mars/Olympus").unwrap_err();
    assert_eq!(e.field, "tz");
    let s = Schedule::parse("0 9 * * MON", "UTC").unwrap();
    let p = s.preview(utc("2026-11-29T00:00:00Z"), 3);
    assert_eq!(
        p,
        vec![
            utc("2026-11-30T09:00:00Z"),
            utc("2026-12-07T09:00:00Z"),
            utc("2026-12-14T09:00:00Z")
        ]
    );
}

#[test]
fn a_cron_of_a_namespace_launches_into_it_under_its_quotas_and_keeps_it_from_deletion() {
    use crate::namespace::{NamespaceOp, Setting};
    let mut l = Log::new();
    let in_ns = |ns: &str, at_ms, op| Command::InNamespace {
        namespace: ns.into(),
        command: Box::new(Command::Cron { at_ms, op }),
    };
    let apply = |l: &mut Log, c: Command| {
        l.i += 1;
        l.s.apply(l.i, &c)
    };
    // No such namespace: refused, nothing made.
    let r = apply(
        &mut l,
        in_ns("ml", 0, CronOp::Create(Box::new(spec("c", Overlap::Allow)))),
    );
    assert!(matches!(r, Response::Rejected(_)), "{r:?}");
    assert!(l.s.crons().is_empty());
    let made = apply(
        &mut l,
        Command::Namespace {
            at_ms: 0,
            op: NamespaceOp::Create {
                name: "ml".into(),
                settings: vec![Setting::PendingJobsMax(1)],
            },
        },
    );
    assert_eq!(made, Response::Done);
    // The same name in two namespaces: two crons.
    let before = l.s.hash();
    let create = || CronOp::Create(Box::new(spec("c", Overlap::Allow)));
    assert_eq!(apply(&mut l, in_ns("ml", 0, create())), Response::Done);
    assert_eq!(l.op(0, create()), Response::Done);
    assert_ne!(l.s.hash(), before);
    let names: Vec<(&str, &str)> =
        l.s.crons()
            .iter()
            .map(|(ns, c)| (ns, c.spec.name.as_str()))
            .collect();
    assert_eq!(names, vec![("default", "c"), ("ml", "c")]);
    // A fire in ml launches a job of ml; ml's next is over its pending quota of 1.
    let fire = |t: u64| CronOp::Fire {
        name: "c".into(),
        late: None,
        scheduled: vec![t],
    };
    assert_eq!(
        apply(&mut l, in_ns("ml", 60_000, fire(60_000))),
        Response::Done
    );
    assert_eq!(
        apply(&mut l, in_ns("ml", 120_000, fire(120_000))),
        Response::Done
    );
    let ml = l.s.crons().get("ml", "c").unwrap().clone();
    let FireOutcome::Launched(super::Launched::Job(job)) = ml.history[0].outcome else {
        panic!("{:?}", ml.history)
    };
    assert_eq!(l.s.namespace_of(job), "ml");
    assert_eq!(
        l.s.job(job)
            .unwrap()
            .spec
            .env
            .get(CRON_ENV_NAME)
            .map(String::as_str),
        Some("c"),
        "the job sees the cron's own name"
    );
    assert!(
        matches!(&ml.history[1].outcome, FireOutcome::Failed(r) if r.contains("pending_jobs_max")),
        "{:?}",
        ml.history[1]
    );
    // The default cron's state is its own.
    assert_eq!(l.cron("c").launched, 0);
    // A name never reaches another namespace's cron through its key.
    for op in [
        CronOp::Delete {
            name: "ml/c".into(),
        },
        CronOp::SetPaused {
            name: "ml/c".into(),
            paused: true,
        },
    ] {
        let r = l.op(0, op);
        assert!(
            matches!(&r, Response::Rejected(e) if e.field == "name"),
            "{r:?}"
        );
    }
    assert!(!l.s.crons().get("ml", "c").unwrap().paused);
    assert!(l.s.crons().get("default", "ml/c").is_none());
    // A namespace's crons_max quota: a cron past it is refused, naming it.
    let capped = apply(
        &mut l,
        Command::Namespace {
            at_ms: 0,
            op: NamespaceOp::Update {
                name: "ml".into(),
                settings: vec![Setting::CronsMax(1)],
                clear: vec![],
            },
        },
    );
    assert_eq!(capped, Response::Done);
    let r = apply(
        &mut l,
        in_ns("ml", 0, CronOp::Create(Box::new(spec("d", Overlap::Skip)))),
    );
    assert!(
        matches!(&r, Response::Rejected(e) if e.field == "quota.crons_max"),
        "{r:?}"
    );
    // A namespace holding a cron is not deleted; once the cron and its job are gone, it is.
    let delete = || Command::Namespace {
        at_ms: 0,
        op: NamespaceOp::Delete { name: "ml".into() },
    };
    l.end(job);
    let r = apply(
        &mut l,
        Command::Collect {
            at_ms: 0,
            jobs: vec![job],
        },
    );
    assert!(matches!(r, Response::Collected { .. }), "{r:?}");
    let r = apply(&mut l, delete());
    assert!(
        matches!(&r, Response::Rejected(e) if e.reason.contains("1 crons")),
        "{r:?}"
    );
    let gone = apply(&mut l, in_ns("ml", 0, CronOp::Delete { name: "c".into() }));
    assert_eq!(gone, Response::Done);
    assert_eq!(apply(&mut l, delete()), Response::Done);
    assert!(l.s.crons().get("default", "c").is_some());
    // Snapshots carry it all.
    let back = ClusterState::from_snapshot(&l.s.to_snapshot()).unwrap();
    assert_eq!(back.hash(), l.s.hash());
}
