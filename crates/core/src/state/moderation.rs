//! What an operator does to the chat: ban and unban users, kick them,
//! send everyone a notice, and look at who is online.
//!
//! These are inputs like commands, only from the operator instead of a
//! connection: they change the state and produce outputs (ERRORs, closes,
//! facts for the store) in the same stream, so a kicked user's ERROR is
//! ordered with everything else it was sent.

use std::sync::Arc;

use natter_proto::{ConvId, ServerMessage};

use super::{Chat, ConnId, Output, Outputs, Recipients, send_one};
use crate::bans::{Ban, BanTarget};
use crate::error::ChatError;
use crate::facts::Fact;
use crate::users::user_key;

/// The conversation id of operator notices: ids are handed out from 1, so
/// 0 is never a real conversation.
pub const NOTICE_CONV: ConvId = 0;

/// Who operator notices come from: not a valid username (`*` is not
/// allowed in one), so no user can pose as the server.
pub const NOTICE_SENDER: &str = "*server*";

/// One online user, as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnlineUser {
    pub name: String,
    pub status: String,
    pub account: bool,
    /// Its devices (connections), oldest first.
    pub devices: Vec<ConnId>,
}

impl Chat {
    /// Whether `name` may come online: not while a ban on it holds.
    pub fn check_not_banned(&mut self, name: &str) -> Result<(), ChatError> {
        let target = BanTarget::User(user_key(name));
        match self.bans.get(&target, self.now) {
            None => Ok(()),
            Some(ban) => Err(ChatError::Banned {
                name: name.to_owned(),
                how: ban.describe(self.now),
            }),
        }
    }

    /// A ban from the store, at start-up (no fact: it is already kept).
    pub fn restore_ban(&mut self, ban: Ban) {
        if matches!(ban.target, BanTarget::User(_)) {
            self.bans.insert(ban);
        }
    }

    /// Bans a user (an address ban is the shell's, and ignored here): it
    /// is kept (a fact, with a store), and each of the user's devices gets
    /// an ERROR saying so and is closed. Gives the number of devices.
    pub fn ban_user(&mut self, ban: Ban, out: &mut Outputs) -> usize {
        let BanTarget::User(key) = &ban.target else {
            return 0;
        };
        let key = key.clone();
        if self.config.durable {
            out.push(Output::Fact(Fact::Banned(ban.clone())));
        }
        let display = self.users.get(&key).map(|u| u.display.clone());
        let text = ChatError::Banned {
            name: display.unwrap_or_else(|| key.clone()),
            how: ban.describe(self.now),
        }
        .to_string();
        self.bans.insert(ban);
        self.close_devices(&key, &text, out)
    }

    /// Lifts the ban on a user; gives it back if one held.
    pub fn unban_user(&mut self, target: &BanTarget, out: &mut Outputs) -> Option<Ban> {
        let lifted = self.bans.remove(target, self.now)?;
        if self.config.durable {
            out.push(Output::Fact(Fact::Unbanned(target.clone())));
        }
        Some(lifted)
    }

    /// The user bans that hold now, by target.
    pub fn user_bans(&self) -> Vec<Ban> {
        self.bans.list(self.now)
    }

    /// Disconnects every device of `name`, each told why first. Gives
    /// how many there were (0: not online).
    pub fn kick(&mut self, name: &str, reason: &str, out: &mut Outputs) -> usize {
        let text = if reason.is_empty() {
            "disconnected by an operator".to_owned()
        } else {
            format!("disconnected by an operator: {reason}")
        };
        self.close_devices(&user_key(name), &text, out)
    }

    fn close_devices(&mut self, key: &str, text: &str, out: &mut Outputs) -> usize {
        let devices = self.devices_of(key);
        for &device in &devices {
            send_one(out, device, ServerMessage::Error(text.to_owned()));
            self.disconnect(device, out);
            out.push(Output::Close(device));
        }
        devices.len()
    }

    /// A notice from the operator to every online device: a `MESSAGE` in
    /// conversation [`NOTICE_CONV`] from [`NOTICE_SENDER`], which every
    /// client already knows how to show. Gives the number of devices.
    pub fn notice(&mut self, text: &str, out: &mut Outputs) -> usize {
        let devices = self.user_conns();
        let count = devices.len();
        if count > 0 {
            out.push(Output::Send {
                to: Recipients::Many(devices),
                message: Arc::new(ServerMessage::Message {
                    conv: NOTICE_CONV,
                    sender: NOTICE_SENDER.to_owned(),
                    text: text.to_owned(),
                    meta: None,
                }),
            });
        }
        count
    }

    /// Every online user with its devices, by name.
    pub fn online(&self) -> Vec<OnlineUser> {
        self.users
            .values()
            .map(|user| OnlineUser {
                name: user.display.clone(),
                status: user.status.clone(),
                account: user.account,
                devices: user.devices.iter().map(|d| d.conn).collect(),
            })
            .collect()
    }

    /// Messages accepted since this state was made.
    pub fn messages_accepted(&self) -> u64 {
        self.messages_accepted
    }

    /// Accounts known (loaded or signed up).
    pub fn account_count(&self) -> usize {
        self.accounts.len()
    }
}
