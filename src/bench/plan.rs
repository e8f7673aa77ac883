//! Who is who in a run: client names, the groups (conversations or
//! channels) of K members they form, and who leads each group's setup.
//!
//! Names carry a short tag from the process id so that two generators
//! pointed at one server (a test and a person, say) never collide.

use std::ops::Range;

/// The layout of C clients in groups of K.
#[derive(Debug, Clone)]
pub struct Plan {
    pub clients: u32,
    pub group: u32,
    tag: String,
}

impl Plan {
    pub fn new(clients: u32, group: u32) -> Plan {
        Plan {
            clients,
            group,
            tag: base36(std::process::id() % 46_656),
        }
    }

    /// The username / nick of client `index`.
    pub fn name(&self, index: u32) -> String {
        format!("b{}x{index}", self.tag)
    }

    /// The IRC channel of client `index`'s group.
    pub fn channel(&self, index: u32) -> String {
        format!("#b{}g{}", self.tag, index / self.group)
    }

    /// The clients in `index`'s group (the last group may be smaller).
    pub fn members(&self, index: u32) -> Range<u32> {
        let start = index / self.group * self.group;
        start..(start + self.group).min(self.clients)
    }

    /// The first member of a group invites the others.
    pub fn is_leader(&self, index: u32) -> bool {
        index % self.group == 0
    }

    /// The order in which clients take turns to send: one member of each
    /// group, then the next member of each group, and so on. Consecutive
    /// messages thus go to different groups, so the load is spread evenly
    /// rather than arriving as bursts for one group (which would hand
    /// batching to the server for free).
    pub fn send_order(&self) -> Vec<u32> {
        let groups = self.clients.div_ceil(self.group);
        (0..self.group)
            .flat_map(|member| (0..groups).map(move |g| g * self.group + member))
            .filter(|&index| index < self.clients)
            .collect()
    }

    /// Deliveries one message from `index` owes: every other member.
    pub fn owed(&self, index: u32) -> u64 {
        u64::from(self.members(index).len() as u32 - 1)
    }
}

fn base36(mut n: u32) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ASCII digits")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_split_into_groups_of_k_with_a_smaller_last_one() {
        let plan = Plan::new(25, 10);
        assert_eq!(plan.members(0), 0..10);
        assert_eq!(plan.members(19), 10..20);
        assert_eq!(plan.members(24), 20..25);
        assert_eq!(plan.owed(3), 9);
        assert_eq!(plan.owed(22), 4);
        assert!(plan.is_leader(20) && !plan.is_leader(21));
        assert_eq!(plan.channel(9), plan.channel(0));
        assert_ne!(plan.channel(10), plan.channel(0));
    }

    #[test]
    fn every_client_sends_once_per_round_and_neighbours_are_in_other_groups() {
        let plan = Plan::new(25, 10);
        let order = plan.send_order();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, (0..25).collect::<Vec<_>>());
        assert_eq!(&order[..4], &[0, 10, 20, 1]);
        for pair in order.windows(2) {
            assert_ne!(plan.members(pair[0]), plan.members(pair[1]));
        }
    }
}
