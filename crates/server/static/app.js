// natter's web chat: one WebSocket to the server's /ws, speaking the
// protocol's JSON encoding, one message per text frame
// ({"command":"JOIN","args":[3]}).
//
// Signing in with an account goes over HTTP (POST /signin or /signup),
// which sets an HttpOnly session cookie; the WebSocket opened after that
// carries the cookie, and the server adds its token to our REGISTER. So a
// reload (or a dropped connection) signs the account back in by itself.
// Guests (no password) sign in with a name only, as before.
//
// The page keeps its state in `state`, changes it only in the message
// handlers and the user's actions, and redraws the part that changed.
// Everything another user wrote reaches the page as text nodes
// (`append(string)`, `textContent`), never as HTML.

// presence-scope: the server tells us only about people we share a
// conversation with and those we WATCH, so the page scales to a company.
// history and topics are offered only by a server with a store; the page
// works without them (no scrollback, no names for conversations).
const CAPS = ['presence-scope', 'presence-delta', 'members', 'history', 'topics'];
/** Messages one HISTORY asks for (scrollback, catching up). */
const HISTORY_PAGE = 50;
/** At most one READ per conversation this often: a busy conversation must
 * not spend the rate limit. */
const READ_EVERY_MS = 2000;
/** How long a toast stays, and how many may show at once. */
const TOAST_MS = 8000;
const MAX_TOASTS = 5;
/** Where the page remembers the layout (bubbles or compact). */
const LAYOUT_KEY = 'natter.layout';
/** Most people one search shows (and watches). */
const SEARCH_LIMIT = 20;
/** Longest search: a username's limit. */
const MAX_SEARCH = 32;
/** Typing pause before a search goes out. */
const SEARCH_DELAY_MS = 150;
const BACKOFF_FIRST_MS = 1000;
const BACKOFF_MAX_MS = 30000;
/** The server's default message limit, checked here to keep the draft. */
const MAX_MESSAGE_BYTES = 8192;
/** Messages kept per conversation; older ones are dropped from the page. */
const MAX_KEPT_MESSAGES = 1000;
/** Re-registering after a reconnect may find the old session not yet gone. */
const MAX_RESTORE_ATTEMPTS = 4;
const PRESET_STATUSES = ['online', 'away', 'busy'];
/** Where the page remembers the status it last set, across reloads. */
const STATUS_KEY = 'natter.status';

const $ = (id) => document.getElementById(id);

const state = {
  /** 'idle' (not signed in, no connection) | 'connecting' | 'open' |
   * 'waiting' (signed in, to reconnect after the backoff) */
  conn: 'connecting',
  socket: null,
  /** What GET /session said about the server: accounts 'off' |
   * 'optional' | 'required', and whether sign-up is open. */
  server: { accounts: 'off', signup: false },
  /** The account this page's cookie signs in, or null (a guest). */
  account: null,
  /** What the sign-in form does: 'signin' | 'signup'. */
  formMode: 'signin',
  backoff: BACKOFF_FIRST_MS,
  retryAt: 0,
  retryTimer: 0,
  /** Who we are (or want to be): {name, status}; null before sign-in. */
  me: null,
  /** A sign-in waiting for the connection to open. */
  wanted: null,
  /** Who we asked to be on this connection, waiting for the answer. */
  pending: null,
  registered: false,
  restoreAttempts: 0,
  caps: new Set(),
  /** name -> status of everyone the server tells us about (ourselves,
   * people in our conversations, people found by the search). */
  online: new Map(),
  /** The search box's text, as last sent with LIST_USERS. */
  query: '',
  searchTimer: 0,
  /** Names the search found, WATCHed so their presence stays live (and
   * so they drop off the list when they leave). */
  found: new Set(),
  /** id -> {id, members: [], messages: [], unread, label, topic, draft,
   * ready, lastSeq, firstUnread, readSent, ...}: `messages` holds the
   * lines shown, our own unsent ones among them (`pending`, with the
   * nonce they are sent under). */
  convs: new Map(),
  /** id -> inviter: invitations not yet accepted or dismissed. */
  invites: new Map(),
  active: null,
  /** People ticked for a new conversation. */
  selected: new Set(),
  /** Names of our INVITEs, in order, waiting for their INVITATION. */
  invitesSent: [],
  /** Conversations to open as soon as the server confirms the join. */
  openOnJoin: new Set(),
  /** Conversations re-joined after a reconnect, in the order of their JOINs,
   * until the server answers each (MEMBERS, or ERROR if it has ended). */
  rejoining: [],
  /** Counts connections: a conversation is `ready` for sending when the
   * server confirmed our membership on the current one. */
  epoch: 0,
  /** The server said it was shutting down before the connection went:
   * conversations missing afterwards went with the restart. */
  serverWentDown: false,
  /** The message list was at the bottom: keep it there when it resizes. */
  stuck: true,
};

// ---------------------------------------------------------------- helpers

/** Creates an element. Strings among the children become text nodes. */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value == null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child != null && child !== false) node.append(child);
  }
  return node;
}

const sameName = (a, b) => a.toLowerCase() === b.toLowerCase();
const isMe = (name) => {
  const me = state.me ?? state.pending;
  return me != null && sameName(name, me.name);
};
const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });

function statusClass(status) {
  return PRESET_STATUSES.includes(status) ? `dot-${status}` : 'dot-custom';
}

/** Shows a note for a while. Each note is its own toast, stacked, so
 * several at once (two conversations gone in one reconnect) are all read. */
function toast(text) {
  const box = $('toasts');
  const node = el('div', { class: 'toast', dir: 'auto' }, text);
  box.append(node);
  while (box.children.length > MAX_TOASTS) box.firstElementChild.remove();
  setTimeout(() => node.remove(), TOAST_MS);
}

/** A random nonce for SEND_MESSAGE: the server stores a message once per
 * nonce, so an outbox can resend after a reconnect without doubling. */
function newNonce() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return `w${[...bytes].map((b) => b.toString(16).padStart(2, '0')).join('')}`;
}

/** `text` as nodes: links become `a` elements, everything else text
 * nodes (never HTML, so markup in a message stays text). */
function linkified(text) {
  const nodes = [];
  let at = 0;
  for (const match of text.matchAll(/\bhttps?:\/\/[^\s<>"]+/g)) {
    // Trailing punctuation is the sentence's, not the link's.
    const url = match[0].replace(/[.,;:!?)\]'"]+$/, '');
    if (match.index > at) nodes.push(text.slice(at, match.index));
    nodes.push(el('a', { href: url, target: '_blank', rel: 'noopener noreferrer' }, url));
    at = match.index + url.length;
  }
  if (at < text.length) nodes.push(text.slice(at));
  return nodes;
}

/** Whether `text` names us as a word ("alice: look", "hi @Alice"). */
function mentionsMe(text) {
  if (!state.me) return false;
  const name = state.me.name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return new RegExp(`(^|[^\\p{L}\\p{N}_])@?${name}($|[^\\p{L}\\p{N}_])`, 'iu').test(text);
}

// ---------------------------------------------------------------- connection

function wsUrl() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/ws`;
}

function connect() {
  clearTimeout(state.retryTimer);
  setConn('connecting');
  const socket = new WebSocket(wsUrl());
  state.socket = socket;
  socket.onopen = () => {
    if (socket !== state.socket) return;
    setConn('open');
    state.epoch += 1;
    state.caps = new Set();
    send('CAPS', CAPS);
    const who = state.me ?? state.wanted ?? accountIdentity();
    state.wanted = null;
    if (who) register(who.name, who.status);
  };
  socket.onmessage = (event) => {
    if (socket !== state.socket) return;
    let msg;
    try {
      msg = JSON.parse(event.data);
    } catch {
      return; // the server sends JSON only
    }
    handle(msg.command, msg.args);
  };
  socket.onclose = () => {
    if (socket !== state.socket) return;
    state.socket = null;
    state.registered = false;
    // Offline we know nothing of anyone's presence: show nobody online
    // rather than a list that is no longer true.
    state.online.clear();
    renderPeople();
    renderConvs();
    if (state.active != null) renderMessages({ keepPosition: true });
    const signingIn = (state.pending || state.wanted) && !state.me;
    state.pending = null;
    state.wanted = null;
    if (state.account) {
      // The session may have ended (signed out elsewhere, password
      // changed): then the server refuses the socket; ask before retrying.
      stillSignedIn().then((yes) => {
        if (!state.account || state.socket) return;
        if (yes) scheduleReconnect();
        else sessionEnded('You were signed out. Sign in again.');
      });
      return;
    }
    if (state.me) {
      scheduleReconnect(); // signed in: come back by ourselves
      return;
    }
    // Not signed in (or signed out): connect again when the user signs in.
    setConn('idle');
    if (signingIn) showSigninError('Could not reach the server. Try again.');
  };
}

/** Drops the current socket (without its close handler running) and
 * opens a new one: after signing in, so that it carries the cookie. */
function reconnectNow() {
  const old = state.socket;
  state.socket = null;
  state.registered = false;
  old?.close();
  connect();
}

/** Who the account's page registers as: its name and last status. */
function accountIdentity() {
  return state.account ? { name: state.account, status: savedStatus() } : null;
}

/** Asks the server about this page's session: {accounts, signup, name},
 * or null when it cannot be reached. */
async function fetchSession() {
  try {
    const response = await fetch('/session', { cache: 'no-store', credentials: 'same-origin' });
    return response.ok ? await response.json() : null;
  } catch {
    return null;
  }
}

/** Whether the cookie still signs us in (yes, when the server cannot say). */
async function stillSignedIn() {
  const session = await fetchSession();
  return session == null || session.name != null;
}

/** Signs in (or up) over HTTP; on success the server sets the session
 * cookie and a new socket signs the account in. */
async function accountSignIn(name, password, status, signup) {
  let response;
  try {
    response = await fetch(signup ? '/signup' : '/signin', {
      method: 'POST',
      body: new URLSearchParams({ name, password }),
      credentials: 'same-origin',
    });
  } catch {
    showSigninError('Could not reach the server. Try again.');
    return;
  }
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    showSigninError(answer.error ?? `The server answered ${response.status}.`);
    return;
  }
  $('password').value = '';
  state.account = answer.name;
  saveStatus(status);
  state.wanted = { name: answer.name, status };
  reconnectNow();
}

/** The account's session is over: back to the form, saying why. */
function sessionEnded(text) {
  clearTimeout(state.retryTimer);
  state.account = null;
  state.me = null;
  state.wanted = null;
  state.pending = null;
  resetChatState();
  setConn('idle');
  showSignin(null, text);
}

function savedStatus() {
  try {
    return localStorage.getItem(STATUS_KEY) || 'online';
  } catch {
    return 'online';
  }
}

function saveStatus(status) {
  try {
    localStorage.setItem(STATUS_KEY, status);
  } catch {
    // Storage may be off; the status is then not kept across reloads.
  }
}

/** Tries again after the current backoff, which then doubles (to 30 s). */
function scheduleReconnect() {
  const delay = state.backoff;
  state.backoff = Math.min(state.backoff * 2, BACKOFF_MAX_MS);
  state.retryAt = Date.now() + delay;
  state.retryTimer = setTimeout(connect, delay);
  setConn('waiting');
}

function send(command, args) {
  const socket = state.socket;
  if (!socket || socket.readyState !== WebSocket.OPEN) return false;
  socket.send(JSON.stringify(args === undefined ? { command } : { command, args }));
  return true;
}

/** Searches who is online whose name starts with the box's text. */
function search(text) {
  state.query = text.trim().slice(0, MAX_SEARCH);
  if (!state.query) {
    watchFound([]);
    return;
  }
  send('LIST_USERS', [state.query, SEARCH_LIMIT]);
}

/** Watches exactly `names` among the search results: their presence then
 * arrives like that of our contacts, and the list shows them. */
function watchFound(names) {
  const wanted = new Set(names.filter((name) => !isMe(name)));
  const gone = [...state.found].filter((name) => !wanted.has(name));
  const added = [...wanted].filter((name) => !state.found.has(name));
  if (gone.length > 0) send('UNWATCH', gone);
  if (added.length > 0) send('WATCH', added);
  state.found = wanted;
  renderPeople();
}

function register(name, status) {
  state.pending = { name, status };
  send('REGISTER', [name, status]);
}

function setConn(conn) {
  state.conn = conn;
  renderConn();
}

// ---------------------------------------------------------------- server messages

const handlers = {
  CAPS(args) {
    state.caps = new Set(args);
  },
  ONLINE_USERS(args) {
    state.online = new Map(Object.entries(args));
    if (!state.registered && state.pending) registered();
    renderPeople();
  },
  USERS(args) {
    // An answer to an older query than the box now holds is ignored.
    if (!state.query) return;
    watchFound(Object.keys(args));
  },
  PRESENCE(args) {
    for (const [name, status] of Object.entries(args)) {
      if (status === null) state.online.delete(name);
      else state.online.set(name, status);
    }
    renderPeople();
  },
  INVITATION([id, inviter]) {
    if (isMe(inviter)) {
      // Our own INVITE: join it at once and show it.
      const conv = conversation(id);
      conv.label = state.invitesSent.shift() ?? null;
      state.openOnJoin.add(id);
      join(id);
      return;
    }
    if (state.convs.get(id)?.joined) return;
    state.invites.set(id, { inviter, members: null, asked: 1 });
    renderInvites();
    // Which conversation, and who is in it: the listing says.
    send('LIST_CONVERSATIONS');
  },
  MEMBERS([id, members]) {
    const waiting = state.rejoining.indexOf(id);
    if (waiting >= 0) state.rejoining.splice(waiting, 1);
    const conv = state.convs.get(id) ?? conversation(id);
    if (!members.some(isMe)) {
      leftConversation(id);
      return;
    }
    noteMembershipChanges(conv, members);
    conv.members = members;
    conv.joined = true;
    const catchUp = conv.ready !== state.epoch && state.caps.has('history');
    conv.ready = state.epoch;
    flushOutbox(conv);
    if (catchUp) send('HISTORY', [id, 0, HISTORY_PAGE]);
    state.invites.delete(id);
    if (state.openOnJoin.delete(id)) open(id);
    renderInvites();
    renderConvs();
    if (state.active === id) renderChatHead();
  },
  CONVERSATIONS(args) {
    const convs = Object.entries(args).map(([id, members]) => [Number(id), members]);
    let invited = false;
    for (const [id, members] of convs) {
      const invite = state.invites.get(id);
      if (invite) {
        invite.members = members;
        invited = true;
        // The inviter usually joins a moment after inviting: ask again
        // (a few times) rather than say nobody is in it.
        if (!members.some((name) => sameName(name, invite.inviter)) && invite.asked < 4) {
          invite.asked += 1;
          setTimeout(() => { if (state.invites.has(id)) send('LIST_CONVERSATIONS'); }, 500 * invite.asked);
        }
      }
    }
    if (invited) renderInvites();
    if ($('browse-dialog').open) renderBrowse(convs);
  },
  MESSAGE([id, sender, text, meta]) {
    // Conversation 0 is never a real one: a notice from the operator.
    if (id === 0) {
      toast(`Notice from the server: ${text}`);
      return;
    }
    const conv = conversation(id);
    conv.joined = true;
    const line = { sender, text, time: meta?.ts ? new Date(meta.ts) : new Date(), seq: meta?.seq };
    if (line.seq != null && conv.messages.some((old) => old.seq === line.seq)) return;
    if (isMe(sender) && settlePending(conv, line, meta?.nonce)) return;
    if (line.seq != null) conv.lastSeq = Math.max(conv.lastSeq, line.seq);
    const seen = state.active === id && !document.hidden;
    if (!seen && !isMe(sender)) {
      if (conv.unread === 0 && conv.firstUnread == null) conv.firstUnread = line.seq ?? line;
      conv.unread += 1;
    }
    line.mention = !isMe(sender) && mentionsMe(text);
    addLine(conv, line);
    if (!isMe(sender)) notify(conv, line, seen);
    if (seen) markRead(conv);
    renderConvs();
    renderTitle();
  },
  HISTORY([id, rows]) {
    const conv = state.convs.get(id);
    if (!conv) return;
    conv.loadingHistory = false;
    const have = new Set(conv.messages.map((line) => line.seq).filter((seq) => seq != null));
    const lines = rows.filter(([seq]) => !have.has(seq))
      .map(([seq, ts, sender, text]) => ({ seq, sender, text, time: new Date(ts), mention: !isMe(sender) && mentionsMe(text) }));
    // Fewer than asked, or down to the first message: nothing older.
    if (rows.length < HISTORY_PAGE || rows[0][0] <= 1) conv.historyDone = true;
    for (const [seq] of rows) conv.lastSeq = Math.max(conv.lastSeq, seq);
    if (lines.length === 0) return;
    // Each in seq order among the numbered lines; newer than all of them
    // (caught up after a reconnect), before our own pending ones.
    for (const line of lines.sort((x, y) => x.seq - y.seq)) {
      let at = conv.messages.findIndex((old) => old.seq != null && old.seq > line.seq);
      if (at < 0) at = conv.messages.findIndex((old) => old.pending);
      if (at < 0) at = conv.messages.length;
      conv.messages.splice(at, 0, line);
    }
    if (state.active === id) renderMessages({ keepPosition: true });
    renderConvs();
  },
  UNREAD(args) {
    for (const [id, [last, read]] of Object.entries(args)) {
      // Shown once MEMBERS confirms we are in it.
      const conv = conversation(Number(id));
      conv.lastSeq = Math.max(conv.lastSeq, last);
      conv.unread = Math.max(0, last - read);
      conv.readSent = Math.max(conv.readSent, read);
      conv.firstUnread = conv.unread > 0 ? read + 1 : null;
    }
    renderConvs();
    renderTitle();
  },
  TOPIC([id, text, setter]) {
    const conv = conversation(id);
    if (conv.topic === text) return;
    const known = conv.topic != null || conv.joined;
    conv.topic = text;
    if (known && conv.joined) addLine(conv, { system: `${setter} named the conversation “${text}”` });
    renderConvs();
    if (state.active === id) renderChatHead();
  },
  ERROR(text) {
    if (/^server (shutting down|failure)/.test(text)) state.serverWentDown = true;
    if (!state.registered && state.pending) {
      registrationRefused(text);
    } else if (rejoinFailed(text)) {
      // Handled: the conversation is gone.
    } else if (state.me) {
      toast(text);
    }
  },
};

function handle(command, args) {
  const handler = handlers[command];
  if (handler) handler(args);
}

function registered() {
  const restoring = state.me != null;
  state.me = state.pending;
  state.pending = null;
  state.registered = true;
  state.restarted = state.serverWentDown;
  state.serverWentDown = false;
  state.backoff = BACKOFF_FIRST_MS;
  state.restoreAttempts = 0;
  if (restoring) {
    // Back after a reconnect: rejoin every conversation we were in.
    state.rejoining = [];
    for (const conv of state.convs.values()) {
      if (!conv.joined) continue;
      if (state.caps.has('members')) state.rejoining.push(conv.id);
      join(conv.id);
    }
    // A new connection watches nobody yet.
    if (state.found.size > 0) send('WATCH', [...state.found]);
  }
  showApp();
  renderConn();
}

function registrationRefused(text) {
  const wanted = state.pending;
  state.pending = null;
  if (state.me && state.restoreAttempts < MAX_RESTORE_ATTEMPTS) {
    // Probably our previous connection, not yet noticed as gone: retry.
    state.restoreAttempts += 1;
    toast(`Could not sign back in: ${text}`);
    state.socket?.close();
    return;
  }
  state.me = null;
  state.account = null;
  state.restoreAttempts = 0;
  resetChatState();
  showSignin(wanted, text);
}

/** A JOIN after a reconnect was refused: the conversation ended while we
 * were away (the server names it in the error, "no conversation 3"). */
function rejoinFailed(text) {
  const named = /conversation #?(\d+)/.exec(text);
  const at = named ? state.rejoining.indexOf(Number(named[1])) : -1;
  if (at < 0) return false;
  const [id] = state.rejoining.splice(at, 1);
  const unsent = state.convs.get(id)?.messages.filter((line) => line.pending).length ?? 0;
  leftConversation(id);
  // A restart is not an end: a server without a store forgets its
  // conversations when it restarts, and says so before it goes.
  let why = state.restarted
    ? `The server restarted and no longer has conversation #${id}.`
    : `Conversation #${id} ended while you were offline.`;
  if (unsent > 0) why += ` ${unsent} unsent message${unsent === 1 ? ' was' : 's were'} not sent.`;
  toast(why);
  return true;
}

function join(id) {
  send('JOIN', [id]);
  if (!state.caps.has('members')) {
    // No MEMBERS acknowledgement will come: assume it worked.
    handlers.MEMBERS([id, [state.me.name]]);
  }
}

function conversation(id) {
  let conv = state.convs.get(id);
  if (!conv) {
    conv = {
      id, members: [], messages: [], unread: 0, joined: false, label: null, topic: null,
      draft: '', ready: 0, lastSeq: 0, readSent: 0, firstUnread: null,
      historyDone: false, loadingHistory: false, readTimer: 0,
    };
    state.convs.set(id, conv);
  }
  return conv;
}

function noteMembershipChanges(conv, members) {
  if (!conv.joined) return; // our own join: no need to list who was there
  for (const name of members) {
    if (!conv.members.includes(name)) addLine(conv, { system: `${name} joined` });
  }
  for (const name of conv.members) {
    if (!members.includes(name)) addLine(conv, { system: `${name} left` });
  }
}

function leftConversation(id) {
  // Its draft and unsent messages go with it: an id a server without a
  // store hands out again is another conversation, with other people.
  clearTimeout(state.convs.get(id)?.readTimer);
  state.convs.delete(id);
  state.openOnJoin.delete(id);
  if (state.active === id) {
    state.active = null;
    $('text').value = '';
    document.body.dataset.view = 'list';
    renderChat();
  }
  renderConvs();
  renderTitle();
}

/** Our own message came back from the server: its pending line (same
 * nonce, or else the oldest pending one with the same text) becomes the
 * delivered one. Whether it was pending or not, true when handled. */
function settlePending(conv, line, nonce) {
  const at = conv.messages.findIndex((old) => old.pending
    && (nonce ? old.nonce === nonce : old.text === line.text));
  if (at < 0) return false;
  Object.assign(conv.messages[at], line, { pending: false });
  if (line.seq != null) conv.lastSeq = Math.max(conv.lastSeq, line.seq);
  // Writing in a conversation is reading it.
  if (state.active === conv.id && !document.hidden) markRead(conv);
  if (state.active === conv.id) renderMessages({ keepPosition: true });
  renderConvs();
  return true;
}

/** Sends what waits in the conversation's outbox, once the server has
 * confirmed we are in it on this connection. A server with `history`
 * drops a resent nonce, so everything unconfirmed goes again; without it
 * only what never left is sent, so nothing is doubled. */
function flushOutbox(conv) {
  if (!state.registered || conv.ready !== state.epoch) return;
  const dedup = state.caps.has('history');
  for (const line of conv.messages) {
    if (!line.pending || (line.sentOn === state.epoch) || (line.sentOn && !dedup)) continue;
    if (send('SEND_MESSAGE', [conv.id, line.text, line.nonce])) line.sentOn = state.epoch;
  }
}

/** A browser notification for a message we have not seen, when the page
 * is hidden and the user allowed them. */
function notify(conv, line, seen) {
  if (seen || !document.hidden || !('Notification' in window)) return;
  if (Notification.permission !== 'granted') return;
  try {
    const note = new Notification(`${line.sender} · ${title(conv)}`, { body: line.text, tag: `natter-${conv.id}` });
    note.onclick = () => {
      window.focus();
      open(conv.id);
    };
  } catch {
    // Some browsers allow notifications only from a service worker.
  }
}

/** Tells the server (at most every READ_EVERY_MS) that we read `conv`
 * up to its newest message, for our other devices and the next visit. */
function markRead(conv) {
  if (!state.caps.has('history') || conv.lastSeq <= conv.readSent || conv.readTimer) return;
  const due = Math.max(0, (conv.readAt ?? 0) + READ_EVERY_MS - Date.now());
  conv.readTimer = setTimeout(() => {
    conv.readTimer = 0;
    if (conv.lastSeq > conv.readSent && send('READ', [conv.id, conv.lastSeq])) {
      conv.readSent = conv.lastSeq;
      conv.readAt = Date.now();
    }
  }, due);
}

/** Sends the READs still held back by the throttle (before signing out). */
function flushReads() {
  for (const conv of state.convs.values()) {
    if (!conv.readTimer) continue;
    clearTimeout(conv.readTimer);
    conv.readTimer = 0;
    if (conv.lastSeq > conv.readSent && send('READ', [conv.id, conv.lastSeq])) conv.readSent = conv.lastSeq;
  }
}

function addLine(conv, line) {
  conv.messages.push(line);
  if (conv.messages.length > MAX_KEPT_MESSAGES) {
    conv.messages.splice(0, conv.messages.length - MAX_KEPT_MESSAGES);
    if (state.active === conv.id) renderMessages();
    return;
  }
  if (state.active === conv.id) appendLine(conv, line);
}

// ---------------------------------------------------------------- user actions

function open(id) {
  const conv = state.convs.get(id);
  if (state.active !== id) {
    // Each conversation keeps its own draft.
    $('text').value = conv?.draft ?? '';
    if (conv) conv.shownUnread = conv.unread > 0 ? conv.firstUnread : null;
  }
  state.active = id;
  if (conv) {
    conv.unread = 0;
    conv.firstUnread = null;
    markRead(conv);
  }
  document.body.dataset.view = 'chat';
  renderConvs();
  renderChat();
  renderTitle();
  autosize();
  $('text').focus();
}

function wireSignin() {
  wireStatusPicker($('signin-status'), $('signin-custom'));
  $('signup-toggle').addEventListener('click', () => {
    state.formMode = state.formMode === 'signup' ? 'signin' : 'signup';
    $('signin-error').hidden = true;
    renderSigninForm();
  });
  $('signin-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const name = $('name').value.trim();
    const status = pickedStatus($('signin-status'), $('signin-custom'));
    const password = $('password').value;
    const signup = state.formMode === 'signup';
    if (!name) {
      showSigninError('Choose a name.');
      return;
    }
    if (!password && (signup || state.server.accounts === 'required')) {
      showSigninError(signup ? 'Choose a password.' : 'Enter your password.');
      return;
    }
    $('signin-error').hidden = true;
    $('signin-button').disabled = true;
    // Asked on a click, as browsers require: notifications for messages
    // that arrive while the page is hidden.
    if ('Notification' in window && Notification.permission === 'default') {
      Notification.requestPermission().catch(() => {});
    }
    if (password && state.server.accounts !== 'off') {
      accountSignIn(name, password, status, signup);
      return;
    }
    if (state.conn === 'open') {
      register(name, status);
    } else {
      state.wanted = { name, status };
      if (state.conn !== 'connecting') connect();
    }
  });
}

function wireStatusPicker(select, custom, onChange) {
  select.addEventListener('change', () => {
    const isCustom = select.value === 'custom';
    custom.hidden = !isCustom;
    if (isCustom) custom.focus();
    if (onChange) onChange(isCustom);
  });
}

function pickedStatus(select, custom) {
  if (select.value !== 'custom') return select.value;
  return custom.value.trim() || 'online';
}

function setStatus(status) {
  if (!state.me) return;
  if (send('STATUS', [status])) state.me.status = status;
  if (state.account) saveStatus(status);
  renderMe();
}

function wireApp() {
  wireStatusPicker($('status-select'), $('status-custom'), (isCustom) => {
    $('status-set').hidden = !isCustom;
    if (!isCustom) setStatus($('status-select').value);
  });
  $('status-form').addEventListener('submit', (event) => {
    event.preventDefault();
    setStatus(pickedStatus($('status-select'), $('status-custom')));
  });
  $('footer-sign-out').addEventListener('click', () => $('sign-out').click());
  $('sign-out').addEventListener('click', () => {
    flushReads();
    // The old socket's close handler will not run (it is no longer ours):
    // the next connection must register afresh.
    state.registered = false;
    if (state.account) {
      // The session ends on the server, which closes its sockets, and the
      // cookie is cleared. Conversations stay ours for the next sign-in.
      const socket = state.socket;
      state.socket = null;
      state.account = null;
      setConn('idle');
      fetch('/signout', { method: 'POST', credentials: 'same-origin' })
        .catch(() => {})
        .finally(() => socket?.close());
    } else {
      send('GOODBYE'); // the server closes the connection
    }
    state.me = null;
    resetChatState();
    showSignin(null, null);
  });
  $('conn').addEventListener('click', () => {
    if (state.conn === 'waiting') connect();
  });
  $('name').addEventListener('input', () => { $('signin-error').hidden = true; });

  $('people-search').addEventListener('input', (event) => {
    clearTimeout(state.searchTimer);
    const text = event.target.value;
    state.searchTimer = setTimeout(() => search(text), SEARCH_DELAY_MS);
  });
  // Enter in the search box searches at once rather than starting a chat.
  $('people-search').addEventListener('keydown', (event) => {
    if (event.key !== 'Enter') return;
    event.preventDefault();
    clearTimeout(state.searchTimer);
    search(event.target.value);
  });

  $('people').addEventListener('change', (event) => {
    const box = event.target;
    if (box.checked) state.selected.add(box.value);
    else state.selected.delete(box.value);
    $('start').disabled = state.selected.size === 0;
  });
  $('start-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const names = [...state.selected];
    if (names.length === 0) return;
    if (send('INVITE', names)) {
      state.invitesSent.push(names.join(', '));
      state.selected.clear();
      renderPeople();
    }
  });

  $('browse').addEventListener('click', () => {
    $('browse-list').replaceChildren(el('li', { class: 'empty' }, 'Loading…'));
    $('browse-dialog').showModal();
    send('LIST_CONVERSATIONS');
  });
  $('leave').addEventListener('click', () => {
    const id = state.active;
    if (id == null) return;
    send('LEAVE', [id]);
    if (!state.caps.has('members')) leftConversation(id);
  });
  $('back').addEventListener('click', () => {
    document.body.dataset.view = 'list';
  });

  const text = $('text');
  text.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $('composer').requestSubmit();
    }
  });
  text.addEventListener('input', () => {
    const conv = state.convs.get(state.active);
    if (conv) conv.draft = text.value;
    autosize();
  });
  $('composer').addEventListener('submit', (event) => {
    event.preventDefault();
    sendDraft();
  });

  const messages = $('messages');
  messages.addEventListener('scroll', () => {
    state.stuck = nearBottom(messages);
    if (state.stuck) $('jump').hidden = true;
    if (messages.scrollTop < 40) loadOlder();
  });
  // A resize (a phone turned, a window narrowed, the keyboard opening)
  // keeps the newest message in view if it was.
  new ResizeObserver(() => {
    if (state.stuck) scrollToBottom();
  }).observe(messages);
  $('layout').addEventListener('click', () => setLayout(document.body.dataset.layout === 'compact' ? 'bubbles' : 'compact'));
  $('rename').addEventListener('click', () => {
    const box = $('text');
    box.value = '/topic ';
    box.focus();
  });
  $('jump').addEventListener('click', () => scrollToBottom());

  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && state.active != null) {
      const conv = state.convs.get(state.active);
      if (conv) {
        conv.unread = 0;
        conv.firstUnread = null;
        markRead(conv);
      }
      renderConvs();
      renderTitle();
    }
  });
}

/** Sends the box's text, or keeps it in the conversation's outbox
 * (shown as pending) until the connection and the conversation are back. */
function sendDraft() {
  const box = $('text');
  const text = box.value;
  const conv = state.convs.get(state.active);
  if (!text.trim() || !conv) return;
  const topic = /^\/topic\s+([^]*)$/.exec(text);
  if (topic) {
    if (!state.caps.has('topics')) {
      toast('This server does not name conversations.');
      return;
    }
    if (!send('TOPIC', [conv.id, topic[1].trim()])) {
      toast('Not connected: try again when the connection is back.');
      return;
    }
  } else {
    if (new TextEncoder().encode(text).length > MAX_MESSAGE_BYTES) {
      toast(`Message too long (at most ${MAX_MESSAGE_BYTES} bytes).`);
      return;
    }
    addLine(conv, { sender: state.me.name, text, time: new Date(), pending: true, nonce: newNonce() });
    flushOutbox(conv);
  }
  box.value = '';
  conv.draft = '';
  autosize();
}

/** Asks for the page of messages before the oldest one shown. */
function loadOlder() {
  const conv = state.convs.get(state.active);
  if (!conv || conv.historyDone || conv.loadingHistory || !state.caps.has('history')) return;
  const oldest = conv.messages.find((line) => line.seq != null)?.seq;
  if (oldest == null && conv.lastSeq === 0) return;
  conv.loadingHistory = send('HISTORY', [conv.id, oldest ?? 0, HISTORY_PAGE]);
}

function setLayout(layout) {
  document.body.dataset.layout = layout;
  $('layout').textContent = layout === 'compact' ? 'Bubbles' : 'Compact';
  $('layout').setAttribute('aria-pressed', String(layout === 'compact'));
  try {
    localStorage.setItem(LAYOUT_KEY, layout);
  } catch {
    // Without storage the layout lasts until the page is closed.
  }
}

function autosize() {
  const box = $('text');
  box.style.height = 'auto';
  box.style.height = `${Math.min(box.scrollHeight, 160)}px`;
  box.classList.toggle('tall', box.scrollHeight > 160);
}

function resetChatState() {
  state.convs.clear();
  state.invites.clear();
  state.selected.clear();
  state.online.clear();
  state.found.clear();
  state.query = '';
  $('people-search').value = '';
  state.invitesSent = [];
  state.openOnJoin.clear();
  state.rejoining = [];
  state.active = null;
  $('text').value = '';
}

// ---------------------------------------------------------------- drawing

function showSignin(wanted, error) {
  $('signin').hidden = false;
  $('app').hidden = true;
  $('me').hidden = true;
  $('signin-button').disabled = false;
  if (wanted) $('name').value = wanted.name;
  if (error) showSigninError(error);
  else $('signin-error').hidden = true;
  renderTitle();
  $('name').focus();
}

/** The form as the server allows: a password for accounts (optional
 * when guests are welcome), and sign-up when it is open. */
function renderSigninForm() {
  const { accounts, signup } = state.server;
  if (!signup) state.formMode = 'signin';
  const signingUp = state.formMode === 'signup';
  $('password-field').hidden = accounts === 'off';
  $('password').autocomplete = signingUp ? 'new-password' : 'current-password';
  let hint = '';
  if (signingUp) hint = '(at least 8 characters)';
  else if (accounts === 'optional') hint = '(only if you have an account)';
  $('password-hint').textContent = hint;
  $('signin-title').textContent = signingUp ? 'Create an account' : 'Sign in to chat';
  $('signin-button').textContent = signingUp ? 'Create account' : 'Sign in';
  $('signin-form').action = signingUp ? '/signup' : '/signin';
  $('signup-switch').hidden = !signup;
  $('switch-text').textContent = signingUp ? 'Have an account?' : 'New here?';
  $('signup-toggle').textContent = signingUp ? 'Sign in' : 'Create an account';
}

function showSigninError(text) {
  const node = $('signin-error');
  node.textContent = text;
  node.hidden = false;
  $('signin-button').disabled = false;
}

function showApp() {
  $('signin').hidden = true;
  $('app').hidden = false;
  $('me').hidden = false;
  renderMe();
  renderPeople();
  renderInvites();
  renderConvs();
  renderChat();
  renderTitle();
}

function renderConn() {
  const node = $('conn');
  node.dataset.state = state.conn;
  if (state.conn === 'open') node.textContent = 'Connected';
  else if (state.conn === 'connecting') node.textContent = 'Connecting…';
  else if (state.conn === 'idle') node.textContent = 'Not connected';
  else {
    const secs = Math.max(0, Math.ceil((state.retryAt - Date.now()) / 1000));
    node.textContent = `Offline · retry in ${secs} s`;
  }
  node.title = state.conn === 'waiting' ? 'Click to retry now' : 'Connection to the server';
  const usable = state.conn === 'open' && state.registered;
  document.body.dataset.online = String(usable);
  $('text').placeholder = usable ? 'Message' : 'Offline: what you send waits for the connection';
}

function renderMe() {
  if (!state.me) return;
  const { name, status } = state.me;
  $('me-name').textContent = name;
  $('footer-name').textContent = name;
  $('me-dot').className = `dot ${statusClass(status)}`;
  const select = $('status-select');
  const isPreset = PRESET_STATUSES.includes(status);
  select.value = isPreset ? status : 'custom';
  $('status-custom').hidden = isPreset;
  $('status-set').hidden = isPreset;
  if (!isPreset) $('status-custom').value = status;
}

function renderPeople() {
  const others = [...state.online.entries()]
    .filter(([name]) => !isMe(name))
    .sort(([a], [b]) => a.localeCompare(b));
  for (const name of state.selected) {
    if (!state.online.has(name)) state.selected.delete(name);
  }
  // A long status is cut to fit; its title shows it whole (hover), and
  // a tap on it shows it whole in place.
  $('people').replaceChildren(...others.map(([name, status]) =>
    el('li', { class: state.found.has(name) ? 'person found' : 'person' },
      el('label', { title: `${name}: ${status}` },
        el('input', { type: 'checkbox', value: name, checked: state.selected.has(name) }),
        el('span', { class: `dot ${statusClass(status)}` }),
        el('span', { class: 'person-name', dir: 'auto' }, name),
        el('span', {
          class: 'person-status', dir: 'auto', title: status,
          onclick: (event) => {
            event.preventDefault();
            event.currentTarget.classList.toggle('expanded');
          },
        }, status)))));
  const offline = !state.registered && state.me != null;
  $('people-empty').hidden = others.length > 0;
  $('people-empty').textContent = offline
    ? 'Offline: who is online shows again when the connection is back.'
    : 'Nobody you talk with is online. Search to find people.';
  // The people listed, so the number always matches the list.
  $('online-count').textContent = offline ? '' : String(others.length);
  $('start').disabled = state.selected.size === 0;
}

function renderInvites() {
  const items = [...state.invites.entries()].map(([id, { inviter, members }]) =>
    el('li', { class: 'invite' },
      el('span', { class: 'invite-text' },
        el('strong', { dir: 'auto' }, inviter), ` invited you to #${id} `,
        members == null ? null : el('span', { class: 'invite-members', dir: 'auto' },
          members.length > 0 ? `with ${members.join(', ')}` : 'nobody in it yet')),
      el('span', { class: 'actions' },
        el('button', {
          type: 'button', class: 'small primary accept', onclick: () => {
            state.openOnJoin.add(id);
            join(id);
          },
        }, 'Accept'),
        el('button', {
          type: 'button', class: 'small ghost dismiss', onclick: () => {
            state.invites.delete(id);
            renderInvites();
          },
        }, 'Dismiss'))));
  $('invites').replaceChildren(...items);
  $('invites-section').hidden = items.length === 0;
}

function title(conv) {
  if (conv.topic) return conv.topic;
  const others = conv.members.filter((name) => !isMe(name));
  if (others.length > 0) return others.join(', ');
  if (conv.label) return conv.label;
  return `Conversation ${conv.id}`;
}

function renderConvs() {
  const convs = [...state.convs.values()].filter((conv) => conv.joined);
  $('convs').replaceChildren(...convs.map((conv) => {
    const last = [...conv.messages].reverse().find((line) => !line.system);
    // Presence is unknown offline, and a member's dot would claim it.
    return el('li', {},
      el('button', {
        type: 'button',
        class: `conv${conv.id === state.active ? ' active' : ''}`,
        'data-conv': conv.id,
        onclick: () => open(conv.id),
      },
      el('span', { class: 'conv-title' }, el('bdi', {}, title(conv)), el('span', { class: 'conv-id' }, ` #${conv.id}`)),
      conv.unread > 0 ? el('span', { class: 'badge', 'aria-label': `${conv.unread} unread` }, String(conv.unread)) : null,
      el('span', { class: 'conv-last', dir: 'auto' }, last ? `${last.sender}: ${last.text}` : 'No messages yet')));
  }));
  $('convs-empty').hidden = convs.length > 0;
}

function renderTitle() {
  let unread = 0;
  for (const conv of state.convs.values()) unread += conv.unread;
  document.title = unread > 0 ? `(${unread}) natter` : 'natter';
}

function renderChat() {
  const conv = state.active == null ? null : state.convs.get(state.active);
  $('chat-empty').hidden = conv != null;
  $('chat-view').hidden = conv == null;
  if (!conv) return;
  renderChatHead();
  renderMessages();
}

function renderChatHead() {
  const conv = state.convs.get(state.active);
  if (!conv) return;
  $('chat-title').textContent = title(conv);
  $('chat-title').title = title(conv);
  $('chat-members').textContent = `#${conv.id} · ${conv.members.length} member${conv.members.length === 1 ? '' : 's'}: ${conv.members.join(', ')}`;
}

/** Redraws the open conversation. `keepPosition`: older messages came in
 * above (or a line changed), so what the reader sees stays put. */
function renderMessages({ keepPosition = false } = {}) {
  const conv = state.convs.get(state.active);
  const list = $('messages');
  const fromBottom = list.scrollHeight - list.scrollTop;
  const stuck = nearBottom(list);
  list.replaceChildren();
  if (conv.historyDone && conv.messages.length > 0 && state.caps.has('history')) {
    list.append(el('li', { class: 'sys history-start' }, 'The beginning of the conversation'));
  }
  let previous = null;
  const marker = conv.shownUnread;
  for (const line of conv.messages) {
    if (marker != null && !line.system && (typeof marker === 'number' ? line.seq === marker : line === marker)) {
      list.append(el('li', { class: 'unread-line', id: 'unread-line' }, 'Unread since here'));
      previous = null;
    }
    list.append(lineNode(line, previous));
    previous = line;
  }
  if (keepPosition && !stuck) {
    list.scrollTop = list.scrollHeight - fromBottom;
  } else if (!keepPosition && marker != null && $('unread-line')) {
    $('unread-line').scrollIntoView({ block: 'center' });
    state.stuck = nearBottom(list);
  } else {
    scrollToBottom();
  }
}

function appendLine(conv, line) {
  const list = $('messages');
  const stick = nearBottom(list) || (!line.system && isMe(line.sender));
  list.append(lineNode(line, conv.messages[conv.messages.length - 2] ?? null));
  if (stick) scrollToBottom();
  else $('jump').hidden = false;
}

/** One message, or a note such as "bob joined". Messages from the same
 * sender within five minutes share one heading. */
function lineNode(line, previous) {
  if (line.system) return el('li', { class: 'sys', dir: 'auto' }, line.system);
  const continued = previous && !previous.system && previous.sender === line.sender
    && line.time - previous.time < 5 * 60 * 1000;
  const kind = `msg${isMe(line.sender) ? ' mine' : ''}${continued ? ' cont' : ''}`
    + `${line.pending ? ' pending' : ''}${line.mention ? ' mention' : ''}`;
  return el('li', { class: kind, 'data-sender': line.sender },
    continued ? null : el('div', { class: 'meta' },
      el('span', { class: 'sender', dir: 'auto' }, line.sender),
      el('time', { datetime: line.time.toISOString() }, timeFormat.format(line.time))),
    el('div', { class: 'text', dir: 'auto' }, linkified(line.text)),
    line.pending ? el('div', { class: 'pending-note' }, state.registered ? 'Sending…' : 'Not sent yet: waiting for the connection') : null);
}

function nearBottom(list) {
  return list.scrollHeight - list.scrollTop - list.clientHeight < 48;
}

function scrollToBottom() {
  const list = $('messages');
  list.scrollTop = list.scrollHeight;
  state.stuck = true;
  $('jump').hidden = true;
}

function renderBrowse(convs) {
  const joinable = convs.filter(([id]) => !state.convs.get(id)?.joined);
  const items = joinable.map(([id, members]) =>
    el('li', { class: 'browse-item' },
      el('span', {}, el('strong', {}, `#${id}`), ' ', members.length > 0 ? members.join(', ') : '(nobody yet)'),
      el('button', {
        type: 'button', class: 'small primary', onclick: () => {
          state.openOnJoin.add(id);
          join(id);
          $('browse-dialog').close();
        },
      }, 'Join')));
  $('browse-list').replaceChildren(...(items.length > 0 ? items
    : [el('li', { class: 'empty' }, 'No other conversations to join.')]));
}

// ---------------------------------------------------------------- start

/** Asks the server who we are first: a signed-in account goes straight
 * back to the chat (the reload case); anyone else gets the form. */
async function start() {
  const session = await fetchSession();
  if (session) {
    state.server = { accounts: session.accounts, signup: session.signup };
    state.account = session.name ?? null;
  }
  renderSigninForm();
  let layout = 'bubbles';
  try {
    layout = localStorage.getItem(LAYOUT_KEY) || layout;
  } catch {
    // No storage: the default layout.
  }
  setLayout(layout);
  if (!state.account) showSignin(null, null);
  connect();
}

wireSignin();
wireApp();
setInterval(() => { if (state.conn === 'waiting') renderConn(); }, 1000);
start();

// For tests and the curious: drop the connection to watch the page recover.
window.natter = { dropConnection: () => state.socket?.close() };
