//! Where timer callbacks wait: one slab per closure type, no box per timer.
//!
//! Boxing every callback (`Box<dyn FnMut>`) costs an allocation when a timer
//! is armed and a free when it fires or is cancelled: measured, about as much
//! as the rest of arming and cancelling put together. Instead, each closure
//! type gets a `Slab<F>` of its own, found by its `TypeId`, and a timer only
//! records which slab (its *kind*) and which slot hold its closure. Slots are
//! reused, so a loop that keeps arming the same kinds of timers stops
//! allocating once its slabs have grown, as the wheel itself does.
//!
//! A slab's element type is known only where the timer is armed. What fires
//! it later is a plain function made for that type, [`call`], stored once per
//! kind: it moves the closure out of its slot, runs it with the loop at hand
//! (nothing is borrowed from the slab meanwhile), and puts it back if the
//! timer is still armed afterwards (a periodic timer that was not cancelled).
//! All of it is safe code: the one type-erased step is a checked downcast.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use slab::Slab;

use super::Fired;
use crate::Ctx;

/// Fires the callback in slot `slot` of kind `kind` (see [`call`]).
pub(crate) type Call<S> = fn(&mut Ctx<S>, &mut S, u32, u32, Fired);

/// What a kind knows of its slab without knowing its element type: the slab
/// itself, behind `Any` (one virtual call to check its type on every arm
/// and fire), and plain functions made for its type for the rest.
struct Kind<S> {
    pool: Box<dyn Any>,
    call: Call<S>,
    /// Drops the closure in a slot (a cancelled timer's).
    drop_slot: fn(&mut dyn Any, u32),
    /// Slots the slab has room for (for tests of slot reuse).
    #[cfg(test)]
    capacity: fn(&dyn Any) -> usize,
}

fn drop_slot<F: 'static>(pool: &mut dyn Any, slot: u32) {
    if let Some(pool) = pool.downcast_mut::<Slab<F>>() {
        pool.remove(slot as usize);
    }
}

#[cfg(test)]
fn capacity<F: 'static>(pool: &dyn Any) -> usize {
    pool.downcast_ref::<Slab<F>>().map_or(0, Slab::capacity)
}

/// The loop's timer callbacks, by kind (closure type) and slot.
pub(crate) struct Callbacks<S> {
    kinds: Vec<Kind<S>>,
    by_type: HashMap<TypeId, u32, BuildHasherDefault<TypeIdHasher>>,
    /// The kind found last. Loops tend to arm the same closure many times in
    /// a row (a timeout per connection, per request), and comparing one
    /// `TypeId` is cheaper than even a cheap hash lookup.
    last: Option<(TypeId, u32)>,
}

impl<S> Callbacks<S> {
    pub(crate) fn new() -> Callbacks<S> {
        Callbacks {
            kinds: Vec::new(),
            by_type: HashMap::default(),
            last: None,
        }
    }

    /// Stores `f` and returns its `(kind, slot)`.
    pub(crate) fn insert<F>(&mut self, f: F) -> (u32, u32)
    where
        F: FnMut(Fired, &mut Ctx<S>, &mut S) + 'static,
    {
        let kind = self.kind_of::<F>();
        let slot = self.pool::<F>(kind).insert(f);
        (kind, u32::try_from(slot).expect("too many timers of one kind"))
    }

    /// Drops the closure of a timer that will not fire.
    pub(crate) fn remove(&mut self, kind: u32, slot: u32) {
        let kind = &mut self.kinds[kind as usize];
        (kind.drop_slot)(&mut *kind.pool, slot);
    }

    /// The function that fires callbacks of `kind`.
    pub(crate) fn call(&self, kind: u32) -> Call<S> {
        self.kinds[kind as usize].call
    }

    fn kind_of<F>(&mut self) -> u32
    where
        F: FnMut(Fired, &mut Ctx<S>, &mut S) + 'static,
    {
        let type_id = TypeId::of::<F>();
        if let Some((last, kind)) = self.last {
            if last == type_id {
                return kind;
            }
        }
        let kinds = &mut self.kinds;
        let kind = *self.by_type.entry(type_id).or_insert_with(|| {
            kinds.push(Kind {
                pool: Box::new(Slab::<F>::new()),
                call: call::<S, F>,
                drop_slot: drop_slot::<F>,
                #[cfg(test)]
                capacity: capacity::<F>,
            });
            (kinds.len() - 1) as u32
        });
        self.last = Some((type_id, kind));
        kind
    }

    /// The slab of `kind`, which holds closures of type `F`.
    fn pool<F: 'static>(&mut self, kind: u32) -> &mut Slab<F> {
        self.kinds[kind as usize]
            .pool
            .downcast_mut()
            .expect("a timer kind holds one closure type")
    }
}

/// Fires one callback of type `F`: moves it out of its slot, runs it, and
/// keeps it only if its timer is still armed (periodic and not cancelled).
/// If it panics, it is dropped while unwinding; its slot is already free.
fn call<S, F>(ctx: &mut Ctx<S>, state: &mut S, kind: u32, slot: u32, fired: Fired)
where
    F: FnMut(Fired, &mut Ctx<S>, &mut S) + 'static,
{
    let mut f = ctx.timers.callbacks.pool::<F>(kind).remove(slot as usize);
    f(fired, ctx, state);
    if let Some(entry) = ctx.timers.wheel.get_mut(fired.id.0) {
        let slot = ctx.timers.callbacks.pool::<F>(kind).insert(f);
        entry.slot = slot as u32;
    }
}

/// `TypeId`s are hashes already: use their bits as they come rather than
/// hashing them again.
#[derive(Default)]
struct TypeIdHasher(u64);

impl Hasher for TypeIdHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Whatever way `TypeId` feeds itself in, keep every byte.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;
    use std::time::Duration;

    use crate::{Clock, EventLoop, ManualClock};

    fn manual_loop() -> (EventLoop<Vec<u32>>, ManualClock) {
        let clock = ManualClock::new();
        let el = EventLoop::builder()
            .clock(Clock::Manual(clock.clone()))
            .build()
            .unwrap();
        (el, clock)
    }

    fn step(el: &mut EventLoop<Vec<u32>>, clock: &ManualClock, ms: u64, log: &mut Vec<u32>) {
        clock.advance(Duration::from_millis(ms));
        el.turn(log, Some(Duration::ZERO)).unwrap();
    }

    /// Counts drops of the closure that captures it.
    struct Token(Rc<Cell<u32>>);

    impl Drop for Token {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }

    #[test]
    fn closures_of_many_types_fire_with_their_captures() {
        let (mut el, clock) = manual_loop();
        let t0 = el.now();
        for i in 0..3u32 {
            // Three closure types, armed interleaved, each capturing its own.
            let a = i * 10;
            el.timer_at(t0 + Duration::from_millis(u64::from(i) + 1), move |_, _, log| {
                log.push(a)
            });
            let b = u64::from(i);
            el.timer_at(t0 + Duration::from_millis(b + 1), move |_, _, log| {
                log.push(b as u32 + 100)
            });
            let c = [i; 4];
            el.timer_at(t0 + Duration::from_millis(u64::from(i) + 1), move |_, _, log| {
                log.push(c[3] + 200)
            });
        }
        let mut log = Vec::new();
        step(&mut el, &clock, 10, &mut log);
        assert_eq!(log, [0, 100, 200, 10, 101, 201, 20, 102, 202]);
        assert_eq!(el.timer_count(), 0);
    }

    #[test]
    fn cancelled_and_fired_closures_are_dropped_and_slots_reused() {
        let (mut el, clock) = manual_loop();
        let drops = Rc::new(Cell::new(0));
        let mut log = Vec::new();
        for round in 0..3u32 {
            let t0 = el.now();
            let ids: Vec<_> = (0..4u32)
                .map(|i| {
                    let token = Token(drops.clone());
                    el.timer_at(t0 + Duration::from_millis(1), move |_, _, log: &mut Vec<u32>| {
                        let _held = &token;
                        log.push(i);
                    })
                })
                .collect();
            assert!(el.cancel_timer(ids[1]));
            assert!(el.cancel_timer(ids[2]));
            assert_eq!(
                drops.get(),
                round * 4 + 2,
                "a cancelled closure is dropped at once"
            );
            step(&mut el, &clock, 1, &mut log);
            assert_eq!(
                drops.get(),
                round * 4 + 4,
                "a fired one-shot is dropped after it runs"
            );
        }
        assert_eq!(log, [0, 3, 0, 3, 0, 3]);
        // One kind, never more than four live closures: twelve timers went
        // through four reused slots.
        assert_eq!(el.timers.callbacks.kinds.len(), 1);
        let kind = &el.timers.callbacks.kinds[0];
        assert_eq!((kind.capacity)(&*kind.pool), 4);
    }

    #[test]
    fn periodic_closure_keeps_its_state_until_cancelled_from_inside() {
        let (mut el, clock) = manual_loop();
        let drops = Rc::new(Cell::new(0));
        let token = Token(drops.clone());
        let mut runs = 0;
        el.timer_every(Duration::from_millis(1), move |fired, ctx, log: &mut Vec<u32>| {
            let _held = &token;
            runs += 1;
            log.push(runs);
            if runs == 3 {
                assert!(ctx.cancel_timer(fired.id));
            }
        });
        let mut log = Vec::new();
        for _ in 0..5 {
            step(&mut el, &clock, 1, &mut log);
        }
        assert_eq!(log, [1, 2, 3]);
        assert_eq!(drops.get(), 1);
        assert_eq!(el.timer_count(), 0);
    }

    #[test]
    fn loop_drop_drops_pending_closures() {
        let (mut el, _clock) = manual_loop();
        let drops = Rc::new(Cell::new(0));
        for _ in 0..3 {
            let token = Token(drops.clone());
            el.timer_after(Duration::from_secs(1), move |_, _, _: &mut Vec<u32>| {
                let _held = &token;
            });
        }
        drop(el);
        assert_eq!(drops.get(), 3);
    }
}
