//! The hub's side of the admin socket: an operator's request, applied to
//! the chat state in the same order as every client's commands.
//!
//! Bans of users are chat rules and live in the chat state; bans of
//! addresses live with admission ([`AddressBans`]), which the hub updates.
//! Either way, with a store the ban is a fact, committed like any other
//! change, and whoever it shuts out is told why and closed at once.
//!
//! [`AddressBans`]: crate::admission::AddressBans

use std::sync::Arc;

use natter_core::bans::{Ban, BanTarget, address_key};
use natter_core::{ConnId, Fact, Output, Recipients};
use natter_proto::ServerMessage;

use super::{Hub, unix_ms};
use crate::admin::{AdminAnswer, AdminRequest, ChatStats, DeviceView, UserView};
use crate::admission::Refusal;

impl Hub {
    /// Carries out one operator request; `Err` is the text the operator
    /// reads.
    pub(super) fn admin(&mut self, request: AdminRequest) -> Result<AdminAnswer, String> {
        let answer = match request {
            AdminRequest::Stats => AdminAnswer::Stats(self.chat_stats()),
            AdminRequest::Users => AdminAnswer::Users(self.online_users()),
            AdminRequest::Kick { name, reason } => {
                match self.chat.kick(&name, &reason, &mut self.outputs) {
                    0 => return Err(format!("{name} is not online")),
                    closed => AdminAnswer::Closed(closed),
                }
            }
            AdminRequest::Ban(ban) => AdminAnswer::Closed(match ban.target {
                BanTarget::User(_) => self.chat.ban_user(ban, &mut self.outputs),
                BanTarget::Address(_) => self.ban_address(ban),
            }),
            AdminRequest::Unban(target) => {
                let lifted = match &target {
                    BanTarget::User(_) => self.chat.unban_user(&target, &mut self.outputs),
                    BanTarget::Address(_) => self.unban_address(&target),
                };
                AdminAnswer::Lifted(lifted.ok_or_else(|| format!("there is no ban on {target}"))?)
            }
            AdminRequest::Bans => {
                let mut bans = self.chat.user_bans();
                bans.extend(self.address_bans.list());
                AdminAnswer::Bans(bans)
            }
            AdminRequest::Broadcast(text) => {
                AdminAnswer::Sent(self.chat.notice(&text, &mut self.outputs))
            }
        };
        self.dispatch();
        Ok(answer)
    }

    fn chat_stats(&self) -> ChatStats {
        ChatStats {
            connections: self.peers.len(),
            users_online: self.chat.user_count(),
            devices: self.chat.user_conns().len(),
            conversations: self.chat.conversation_count(),
            messages_since_start: self.chat.messages_accepted(),
            accounts: self.chat.account_count(),
            bans: self.chat.user_bans().len() + self.address_bans.list().len(),
        }
    }

    fn online_users(&self) -> Vec<UserView> {
        self.chat
            .online()
            .into_iter()
            .map(|user| UserView {
                name: user.name,
                status: user.status,
                account: user.account,
                devices: user
                    .devices
                    .iter()
                    .filter_map(|conn| {
                        let peer = self.peers.get(conn)?;
                        Some(DeviceView {
                            conn: conn.0,
                            address: peer.addr,
                            transport: peer.transport_name(),
                            encoding: peer.encoding,
                        })
                    })
                    .collect(),
            })
            .collect()
    }

    /// Bans an address (or /64): kept (with a store), refused by admission
    /// from now on, and every connection from it, registered or not, is
    /// told why and closed.
    fn ban_address(&mut self, ban: Ban) -> usize {
        let BanTarget::Address(banned) = ban.target else {
            return 0;
        };
        if self.store.is_some() {
            self.outputs.push(Output::Fact(Fact::Banned(ban.clone())));
        }
        let text = Refusal::Banned {
            how: ban.describe(unix_ms()),
        }
        .to_string();
        self.address_bans.insert(ban);
        let mut doomed: Vec<ConnId> = self
            .peers
            .iter()
            .filter(|(_, peer)| address_key(peer.addr.ip()) == banned)
            .map(|(conn, _)| *conn)
            .collect();
        doomed.sort();
        for &conn in &doomed {
            self.outputs.push(Output::Send {
                to: Recipients::One(conn),
                message: Arc::new(ServerMessage::Error(text.clone())),
            });
            self.chat.disconnect(conn, &mut self.outputs);
            self.outputs.push(Output::Close(conn));
        }
        doomed.len()
    }

    fn unban_address(&mut self, target: &BanTarget) -> Option<Ban> {
        let lifted = self.address_bans.remove(target)?;
        if self.store.is_some() {
            self.outputs
                .push(Output::Fact(Fact::Unbanned(target.clone())));
        }
        Some(lifted)
    }
}
