use super::*;

/// A waiter of `a.lock` that arrived `order`-th, judging as `judging`, that last learnt
/// the lock's state at `since` and looks every `interval` (its deadline is due).
fn waiter(order: u64, judging: Option<u64>, since: Instant, interval: Duration) -> Waiter {
    Waiter {
        dir: PathBuf::from("/locks"),
        name: OsString::from("a.lock"),
        holder: None,
        deadline: since + interval,
        interval,
        since,
        judging,
        order,
        paused_until: None,
        callback: Box::new(|_| {}),
    }
}

fn state(waiters: Vec<Waiter>) -> State {
    let mut st = State::default();
    for (i, w) in waiters.into_iter().enumerate() {
        st.waiters.insert(WaitId(i as u64 + 1), w);
    }
    st
}

const POLL: Duration = Duration::from_millis(500);

#[test]
fn waiters_judging_alike_share_one_fallback_look() {
    let t0 = Instant::now();
    let now = t0 + POLL;
    let mut st = state((0..5).map(|o| waiter(o, Some(7), t0, POLL)).collect());
    let mut fired = Vec::new();
    st.pass_on_looks(&mut fired, (1..=5).rev().map(WaitId).collect(), now);
    // The earliest arrival looks; the others learn from its look and wait one interval
    // from it.
    assert_eq!(fired, [(WaitId(1), WakeReason::Deadline)]);
    for id in 2..=5 {
        let w = &st.waiters[&WaitId(id)];
        assert_eq!((w.since, w.deadline), (now, now + POLL));
    }
    // Nobody looked since (the one that looked is blocked, say): one of them looks then.
    st.waiters.remove(&WaitId(1));
    let mut fired = Vec::new();
    st.pass_on_looks(&mut fired, (2..=5).map(WaitId).collect(), now + POLL);
    assert_eq!(fired, [(WaitId(2), WakeReason::Deadline)]);
}

#[test]
fn a_look_after_an_event_puts_off_the_others_deadlines() {
    let t0 = Instant::now();
    let now = t0 + POLL;
    let mut st = state(vec![
        waiter(0, Some(7), t0, POLL),
        waiter(1, Some(7), t0, POLL),
    ]);
    // The first was woken by a release just now; the second's deadline is due.
    let mut fired = vec![(WaitId(1), WakeReason::Changed)];
    st.pass_on_looks(&mut fired, vec![WaitId(2)], now);
    assert_eq!(fired, [(WaitId(1), WakeReason::Changed)]);
    assert_eq!(st.waiters[&WaitId(2)].deadline, now + POLL);
}

#[test]
fn waiters_judging_otherwise_look_on_their_own() {
    let t0 = Instant::now();
    let now = t0 + POLL;
    let mut st = state(vec![
        waiter(0, Some(7), t0, POLL),
        waiter(1, Some(8), t0, POLL), // another heartbeatStaleMs
        waiter(2, None, t0, POLL),    // injected callbacks
        waiter(3, None, t0, POLL),
    ]);
    let mut fired = Vec::new();
    st.pass_on_looks(&mut fired, (1..=4).map(WaitId).collect(), now);
    let ids: Vec<u64> = fired.iter().map(|(id, _)| id.0).collect();
    assert_eq!(ids, [1, 2, 3, 4]);
}

#[test]
fn a_look_older_than_what_a_waiter_knows_does_not_put_it_off() {
    let t0 = Instant::now();
    let mut st = state(vec![waiter(0, Some(7), t0, POLL)]);
    // A look before this waiter registered (it looked itself then).
    st.looks.insert(
        (PathBuf::from("/locks"), OsString::from("a.lock"), 7),
        t0 - Duration::from_millis(1),
    );
    let mut fired = Vec::new();
    st.pass_on_looks(&mut fired, vec![WaitId(1)], t0 + POLL);
    assert_eq!(fired, [(WaitId(1), WakeReason::Deadline)]);
    // Its short interval (an unreadable lockfile's relook) counts from the latest look.
    let short = Duration::from_millis(25);
    let mut st = state(vec![
        waiter(0, Some(7), t0, POLL),
        waiter(1, Some(7), t0, short),
    ]);
    let mut fired = vec![(WaitId(1), WakeReason::Changed)];
    st.pass_on_looks(&mut fired, vec![WaitId(2)], t0 + short);
    assert_eq!(fired.len(), 1);
    assert_eq!(st.waiters[&WaitId(2)].deadline, t0 + short + short);
}

#[test]
fn looks_at_paths_nobody_waits_for_are_forgotten() {
    let t0 = Instant::now();
    let mut st = state(vec![waiter(0, Some(7), t0, POLL)]);
    let mut fired = vec![(WaitId(1), WakeReason::Changed)];
    st.pass_on_looks(&mut fired, Vec::new(), t0);
    st.looks
        .insert((PathBuf::from("/locks"), OsString::from("b.lock"), 7), t0);
    st.forget_unwaited_looks();
    let kept: Vec<&OsString> = st.looks.keys().map(|(_, name, _)| name).collect();
    assert_eq!(kept, [&OsString::from("a.lock")]);
    st.waiters.clear();
    st.forget_unwaited_looks();
    assert!(st.looks.is_empty());
}
