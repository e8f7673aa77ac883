//! What the chat state holds per idle user: the workload of `natter bench
//! --idle` (users in conversations of 10, everyone joined, presence
//! flushed, the periodic snapshot run) against a counting allocator, so
//! that a change that grows per-user state fails here rather than in a
//! 15,000-client benchmark. Bytes are what was asked of the allocator
//! (malloc's own overhead comes on top); `docs/PERFORMANCE.md` says where
//! they go.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicIsize, Ordering};

use natter_core::{Chat, Config, ConnId, Output, Outputs};
use natter_proto::{Command, ServerMessage};

/// Counts the bytes live on the heap.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The tests of this file measure one at a time (the counter is global).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const USERS: u64 = 2_000;
const GROUP: u64 = 10;

/// Heap bytes per user that the chat state holds once `USERS` users with
/// `caps` are registered and joined in conversations of `GROUP`.
fn bytes_per_idle_user(caps: &[&str]) -> f64 {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut chat = Chat::new(Config::default());
    let mut out = Outputs::new();
    let before = LIVE.load(Ordering::Relaxed);
    let conns: Vec<ConnId> = (1..=USERS).map(ConnId).collect();
    for (i, &conn) in conns.iter().enumerate() {
        chat.connect(conn);
        let caps = caps.iter().map(|c| c.to_string()).collect();
        chat.handle(conn, Command::Caps(caps), &mut out);
        let register = Command::Register {
            name: format!("b{i}"),
            status: "bench".into(),
        };
        chat.handle(conn, register, &mut out);
        // The server flushes presence every 100 ms: many registrations
        // per window.
        if i % 100 == 99 {
            chat.flush_presence(&mut out);
        }
        out.clear();
    }
    chat.flush_presence(&mut out);
    out.clear();
    for group in conns.chunks(GROUP as usize) {
        let invited = (group[0].0..group[0].0 + group.len() as u64)
            .skip(1)
            .map(|c| format!("b{}", c - 1))
            .collect();
        chat.handle(group[0], Command::Invite(invited), &mut out);
        let conv = out
            .iter()
            .find_map(|o| match o {
                Output::Send { message, .. } => match **message {
                    ServerMessage::Invitation { conv, .. } => Some(conv),
                    _ => None,
                },
                _ => None,
            })
            .expect("an INVITATION");
        for &conn in group {
            chat.handle(conn, Command::Join(conv), &mut out);
        }
        out.clear();
    }
    chat.flush_presence(&mut out);
    chat.presence_snapshot(&mut out);
    out = Outputs::new();
    drop(out);
    assert_eq!(chat.user_count(), USERS as usize);
    let held = LIVE.load(Ordering::Relaxed);
    (held - before) as f64 / USERS as f64
}

/// Clients as `natter bench` makes them, without `presence-scope`.
#[test]
fn an_idle_user_holds_a_bounded_share_of_the_chat_state() {
    let bytes = bytes_per_idle_user(&["presence-delta", "members"]);
    println!("chat state per idle user: {bytes:.0} bytes");
    assert!(bytes <= 1.0, "{bytes:.0} bytes per user");
}

/// The same with `presence-scope`, which keeps a view per device.
#[test]
fn an_idle_scoped_user_holds_a_bounded_share_of_the_chat_state() {
    let bytes = bytes_per_idle_user(&["presence-scope", "presence-delta", "members"]);
    println!("chat state per idle scoped user: {bytes:.0} bytes");
    assert!(bytes <= 1.0, "{bytes:.0} bytes per user");
}
