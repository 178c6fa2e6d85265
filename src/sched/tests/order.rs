//! Queue-order tests with `wave_priority`: continuation waves by rank, the smallest new
//! gang first, and the bound on overtaking.

use super::*;

#[test]
fn continuation_waves_wait_ahead_of_new_requests_by_rank() {
    // One running request fills the 2 seq slots; three entries wait: a new 2-sample
    // request (a larger gang than the waves, so it does not overtake them) and two waves.
    let mut s = sched(64, 4, 64, 2);
    s.add_group(req(1, prompt(4, 100), 2, 1)).unwrap();
    step(&mut s);
    s.add_group(req(2, prompt(4, 200), 2, 2)).unwrap(); // new, arrived 2
    let mut wave = |id: u64, arrival: u64, rank: u32| {
        let mut r = req(id, prompt(4, 300 + id as u32), 1, arrival);
        r.continuation = Some(rank);
        s.add_group(r).unwrap()[0]
    };
    let w_late = wave(3, 0, 500);
    let w_sure = wave(4, 0, 100);
    // The running request's samples end: two slots free up, one at a time.
    let running: Vec<SeqId> = s.running_seq_ids();
    s.finish_seq(running[0]).unwrap();
    let o = step(&mut s);
    assert_eq!(
        o.seqs.iter().map(|r| r.seq_id).collect::<Vec<_>>()[1..],
        [w_sure]
    );
    s.finish_seq(running[1]).unwrap();
    let o = step(&mut s);
    assert!(o.seqs.iter().any(|r| r.seq_id == w_late), "{:?}", rows(&o));
    // FCFS: the new request (queued first) would have gone before both waves.
    let mut f = sched(64, 4, 64, 2);
    f.cfg.wave_priority = false;
    f.add_group(req(1, prompt(4, 100), 2, 1)).unwrap();
    step(&mut f);
    let new = f.add_group(req(2, prompt(4, 200), 1, 2)).unwrap()[0];
    let mut r = req(4, prompt(4, 304), 1, 0);
    r.continuation = Some(100);
    f.add_group(r).unwrap();
    let running: Vec<SeqId> = f.running_seq_ids();
    f.finish_seq(running[0]).unwrap();
    let o = step(&mut f);
    assert_eq!(o.seqs.last().map(|r| r.seq_id), Some(new));
}

/// Two seq slots held by a running 2-sample request; then a `wave_n`-sample continuation
/// wave (arrived 0) and a plain 1-sample request (arrived `plain_arrival`) wait. Returns
/// the scheduler and the two waiting seq ids (wave, plain).
fn wave_and_plain(wave_n: usize, plain_arrival: u64) -> (Scheduler, SeqId, SeqId) {
    let mut s = sched(256, 4, 64, 2);
    s.add_group(req(1, prompt(4, 100), 2, 1)).unwrap();
    step(&mut s);
    let mut wave = req(2, prompt(4, 200), wave_n, 0);
    wave.continuation = Some(0);
    let wave_id = s.add_group(wave).unwrap()[0];
    let plain = s
        .add_group(req(3, prompt(4, 300), 1, plain_arrival))
        .unwrap()[0];
    (s, wave_id, plain)
}

#[test]
fn no_larger_gang_first_and_no_entry_overtaken_more_than_the_limit() {
    // One slot frees: the plain request goes first although it arrived later, against a
    // 2-sample wave (which waits for both slots) and against a 1-sample one (equal gangs,
    // but the wave's request may need more waves).
    for wave_n in [2, 1] {
        let (mut s, wave_id, plain) = wave_and_plain(wave_n, 5);
        let running: Vec<SeqId> = s.running_seq_ids();
        s.finish_seq(running[0]).unwrap();
        let o = step(&mut s);
        let ids: Vec<SeqId> = o.seqs.iter().map(|r| r.seq_id).collect();
        assert!(ids.contains(&plain), "{wave_n}: {:?}", rows(&o));
        assert!(!ids.contains(&wave_id), "{wave_n}: {:?}", rows(&o));
    }

    // Overtaking is bounded: with an entry 32 arrivals newer than the wave in the queue,
    // the wave goes ahead of the smaller new request (and takes both free slots).
    let (mut s, wave_id, plain) = wave_and_plain(2, 32);
    for seq in s.running_seq_ids() {
        s.finish_seq(seq).unwrap();
    }
    let o = step(&mut s);
    let ids: Vec<SeqId> = o.seqs.iter().map(|r| r.seq_id).collect();
    assert!(ids.contains(&wave_id), "{:?}", rows(&o));
    assert!(!ids.contains(&plain), "{:?}", rows(&o));
}

#[test]
fn smaller_new_requests_first_and_never_passed_more_than_the_limit() {
    // Two slots held by a running 2-sample request; a new 2-sample request (arrived 2)
    // waits ahead of a plain one. One slot frees: the plain request goes first (FCFS would
    // hold it behind the larger gang, which needs both slots).
    let setup = |plain_arrival: u64| {
        let mut s = sched(256, 4, 64, 2);
        s.add_group(req(1, prompt(4, 100), 2, 1)).unwrap();
        step(&mut s);
        let big = s.add_group(req(2, prompt(4, 200), 2, 2)).unwrap()[0];
        let plain = s
            .add_group(req(3, prompt(4, 300), 1, plain_arrival))
            .unwrap()[0];
        (s, big, plain)
    };
    let (mut s, big, plain) = setup(3);
    let running = s.running_seq_ids();
    s.finish_seq(running[0]).unwrap();
    let ids: Vec<SeqId> = step(&mut s).seqs.iter().map(|r| r.seq_id).collect();
    assert!(ids.contains(&plain) && !ids.contains(&big), "{ids:?}");

    // With an entry 32 arrivals newer than the 2-sample request in the queue, it is no
    // longer passed: it goes first once both slots are free.
    let (mut s, big, plain) = setup(2 + 32);
    for seq in s.running_seq_ids() {
        s.finish_seq(seq).unwrap();
    }
    let ids: Vec<SeqId> = step(&mut s).seqs.iter().map(|r| r.seq_id).collect();
    assert!(ids.contains(&big) && !ids.contains(&plain), "{ids:?}");
}

#[test]
fn an_urgent_wave_goes_before_other_waves_and_new_requests() {
    // A plain request (arrived 5) and a better-ranked wave wait beside an urgent wave; one
    // slot frees: the urgent wave goes although both would pass a normal wave.
    let (mut s, normal, plain) = wave_and_plain(1, 5);
    let mut r = req(4, prompt(4, 400), 1, 0);
    (r.continuation, r.urgent) = (Some(900), true);
    let urgent = s.add_group(r).unwrap()[0];
    let running = s.running_seq_ids();
    s.finish_seq(running[0]).unwrap();
    let ids: Vec<SeqId> = step(&mut s).seqs.iter().map(|r| r.seq_id).collect();
    assert!(ids.contains(&urgent), "{ids:?}");
    assert!(!ids.contains(&plain) && !ids.contains(&normal), "{ids:?}");
    // Then the plain request, as before.
    s.finish_seq(running[1]).unwrap();
    let ids: Vec<SeqId> = step(&mut s).seqs.iter().map(|r| r.seq_id).collect();
    assert!(ids.contains(&plain) && !ids.contains(&normal), "{ids:?}");

    // `urgent` on a new request means nothing: it is ordered as any new request.
    let mut s = sched(256, 4, 64, 2);
    s.add_group(req(1, prompt(4, 100), 2, 1)).unwrap();
    step(&mut s);
    let mut big = req(2, prompt(4, 200), 2, 2);
    big.urgent = true;
    let big = s.add_group(big).unwrap()[0];
    let plain = s.add_group(req(3, prompt(4, 300), 1, 3)).unwrap()[0];
    let running = s.running_seq_ids();
    s.finish_seq(running[0]).unwrap();
    let ids: Vec<SeqId> = step(&mut s).seqs.iter().map(|r| r.seq_id).collect();
    assert!(ids.contains(&plain) && !ids.contains(&big), "{ids:?}");
}
