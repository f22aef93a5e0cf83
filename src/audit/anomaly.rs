//! In-filter anomaly detection: authorization-denial bursts (privilege probing)
//! and per-subject daily request volume (exfiltration).
//!
//! State lives in the worker's memory, per detector: counts are per worker, so
//! with N Envoy workers a subject spread evenly over them needs up to N times the
//! threshold before one worker alerts. That is accepted: the alert is a signal for
//! the collector side, which sees every worker's records; sharing the counts would
//! cost a shared-data CAS round per request. Memory is bounded: at most
//! `max_tracked_subjects` subjects per detector, the one tracked longest is
//! forgotten first.
//!
//! Windows are fixed: a denial window opens at a subject's first denial and lasts
//! `window_seconds`; a volume window is the UTC day. Each raises at most one
//! alert per window, on the first event above the threshold.

use super::fields::Subject;
use super::record::{AlertKind, SecurityAlert};
use crate::config::audit::AnomalyConfig;
use std::collections::{HashMap, VecDeque};

const DAY_MS: u64 = 86_400_000;

/// Counts per subject within fixed windows, bounded in subjects.
#[derive(Debug, Clone)]
struct WindowCounter {
    max: u64,
    window_ms: u64,
    /// Whether windows are UTC days (aligned to midnight) rather than opened by
    /// the first event.
    calendar_days: bool,
    cap: usize,
    entries: HashMap<Subject, Window>,
    /// Insertion order, for eviction. Holds exactly the keys of `entries`.
    order: VecDeque<Subject>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start_ms: u64,
    count: u64,
    alerted: bool,
}

impl WindowCounter {
    fn new(max: u64, window_ms: u64, calendar_days: bool, cap: usize) -> Self {
        WindowCounter {
            max,
            window_ms: window_ms.max(1),
            calendar_days,
            cap: cap.max(1),
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn window_start(&self, now_ms: u64) -> u64 {
        if self.calendar_days {
            now_ms - now_ms % DAY_MS
        } else {
            now_ms
        }
    }

    /// Counts one event; returns the count if this event crossed the threshold
    /// for the first time in its window.
    fn hit(&mut self, subject: &Subject, now_ms: u64) -> Option<u64> {
        let start = self.window_start(now_ms);
        if !self.entries.contains_key(subject) {
            while self.entries.len() >= self.cap {
                match self.order.pop_front() {
                    Some(oldest) => {
                        self.entries.remove(&oldest);
                    }
                    None => break,
                }
            }
            self.entries
                .insert(subject.clone(), Window { start_ms: start, count: 0, alerted: false });
            self.order.push_back(subject.clone());
        }
        let window_ms = self.window_ms;
        let max = self.max;
        let entry = self.entries.get_mut(subject)?;
        // A clock that went backwards also starts a new window.
        if now_ms >= entry.start_ms.saturating_add(window_ms) || now_ms < entry.start_ms {
            *entry = Window { start_ms: start, count: 0, alerted: false };
        }
        entry.count = entry.count.saturating_add(1);
        if entry.count > max && !entry.alerted {
            entry.alerted = true;
            return Some(entry.count);
        }
        None
    }

    fn tracked(&self) -> usize {
        self.entries.len()
    }
}

/// The anomaly detectors of one worker.
#[derive(Debug, Clone)]
pub struct AnomalyDetector {
    denials: Option<WindowCounter>,
    daily: Option<WindowCounter>,
}

impl AnomalyDetector {
    /// Detectors as configured (absent thresholds: off).
    pub fn new(config: &AnomalyConfig) -> AnomalyDetector {
        let cap = config.max_tracked_subjects;
        AnomalyDetector {
            denials: config.denials_per_subject.map(|t| {
                WindowCounter::new(t.max, t.window_seconds.saturating_mul(1000), false, cap)
            }),
            daily: config
                .requests_per_subject_per_day
                .map(|t| WindowCounter::new(t.max, DAY_MS, true, cap)),
        }
    }

    /// Counts an authorization denial; `Some` alert at most once per window.
    pub fn on_denial(&mut self, subject: &Subject, now_ms: u64) -> Option<SecurityAlert> {
        let counter = self.denials.as_mut()?;
        let count = counter.hit(subject, now_ms)?;
        Some(SecurityAlert {
            alert: AlertKind::DenialBurst,
            count,
            threshold: counter.max,
            window_seconds: counter.window_ms / 1000,
        })
    }

    /// Counts a request; `Some` alert at most once per UTC day.
    pub fn on_request(&mut self, subject: &Subject, now_ms: u64) -> Option<SecurityAlert> {
        let counter = self.daily.as_mut()?;
        let count = counter.hit(subject, now_ms)?;
        Some(SecurityAlert {
            alert: AlertKind::VolumeAnomaly,
            count,
            threshold: counter.max,
            window_seconds: DAY_MS / 1000,
        })
    }

    /// Subjects tracked by the (denial, daily) detectors.
    pub fn tracked(&self) -> (usize, usize) {
        (
            self.denials.as_ref().map_or(0, WindowCounter::tracked),
            self.daily.as_ref().map_or(0, WindowCounter::tracked),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::fields::Pseudonymizer;
    use crate::config::audit::{DailyThreshold, SubjectMode, WindowThreshold};

    fn subject(name: &str) -> Subject {
        Pseudonymizer::new(SubjectMode::Raw, b"").subject(name)
    }

    fn detector(cap: usize) -> AnomalyDetector {
        AnomalyDetector::new(&AnomalyConfig {
            denials_per_subject: Some(WindowThreshold { max: 3, window_seconds: 60 }),
            requests_per_subject_per_day: Some(DailyThreshold { max: 5 }),
            max_tracked_subjects: cap,
        })
    }

    #[test]
    fn one_denial_alert_per_window() {
        let mut d = detector(100);
        let alice = subject("alice");
        let t0 = 1_000_000;
        let alerts: Vec<Option<SecurityAlert>> =
            (0..10).map(|i| d.on_denial(&alice, t0 + i * 1000)).collect();
        assert!(alerts[..3].iter().all(Option::is_none));
        assert_eq!(
            alerts[3],
            Some(SecurityAlert {
                alert: AlertKind::DenialBurst,
                count: 4,
                threshold: 3,
                window_seconds: 60
            })
        );
        assert!(alerts[4..].iter().all(Option::is_none));
        // The window opened at t0 closes at t0 + 60 s: a new one may alert again.
        assert!((0..3).all(|i| d.on_denial(&alice, t0 + 60_000 + i).is_none()));
        assert!(d.on_denial(&alice, t0 + 60_010).is_some());
        assert!(d.on_denial(&alice, t0 + 60_011).is_none());
    }

    #[test]
    fn subjects_are_counted_separately() {
        let mut d = detector(100);
        for i in 0..3 {
            assert!(d.on_denial(&subject("a"), i).is_none());
            assert!(d.on_denial(&subject("b"), i).is_none());
        }
        assert!(d.on_denial(&subject("a"), 10).is_some());
        assert!(d.on_denial(&subject("b"), 10).is_some());
    }

    #[test]
    fn one_volume_alert_per_utc_day() {
        let mut d = detector(100);
        let bob = subject("bob");
        let day = 19_000 * DAY_MS;
        let late = day + DAY_MS - 10;
        let alerts: Vec<bool> =
            (0..20).map(|i| d.on_request(&bob, late - 20 + i).is_some()).collect();
        assert_eq!(alerts.iter().filter(|a| **a).count(), 1);
        assert!(alerts[5], "the sixth request of the day alerts");
        // Midnight UTC opens the next window even though only ms have passed.
        assert!((0..5).all(|i| d.on_request(&bob, day + DAY_MS + i).is_none()));
        let next = d.on_request(&bob, day + DAY_MS + 5).unwrap();
        assert_eq!(
            (next.alert, next.count, next.threshold, next.window_seconds),
            (AlertKind::VolumeAnomaly, 6, 5, 86_400)
        );
    }

    #[test]
    fn tracked_subjects_are_capped_and_the_oldest_is_forgotten() {
        let mut d = detector(3);
        for name in ["a", "b", "c"] {
            for i in 0..3 {
                d.on_denial(&subject(name), i);
            }
        }
        assert_eq!(d.tracked().0, 3);
        d.on_denial(&subject("d"), 5);
        assert_eq!(d.tracked().0, 3);
        // "a" was forgotten: its next denial starts from one, no alert.
        assert!(d.on_denial(&subject("a"), 6).is_none());
        // "c" is still tracked at 3 denials: the next one alerts.
        assert!(d.on_denial(&subject("c"), 7).is_some());
    }

    #[test]
    fn absent_thresholds_switch_detectors_off() {
        let mut d = AnomalyDetector::new(&AnomalyConfig::default());
        for i in 0..1000 {
            assert!(d.on_denial(&subject("x"), i).is_none());
            assert!(d.on_request(&subject("x"), i).is_none());
        }
        assert_eq!(d.tracked(), (0, 0));
    }

    #[test]
    fn a_clock_going_backwards_opens_a_new_window() {
        let mut d = detector(10);
        let s = subject("s");
        for i in 0..3 {
            d.on_denial(&s, 100_000 + i);
        }
        assert!(d.on_denial(&s, 50_000).is_none());
    }
}
