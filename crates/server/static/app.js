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
const CAPS = ['presence-scope', 'presence-delta', 'members'];
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
  /** id -> {id, members: [], messages: [], unread, label} */
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

let toastTimer = 0;
function toast(text) {
  const node = $('toast');
  node.textContent = text;
  node.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { node.hidden = true; }, 5000);
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
    state.invites.set(id, inviter);
    renderInvites();
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
    state.invites.delete(id);
    if (state.openOnJoin.delete(id)) open(id);
    renderInvites();
    renderConvs();
    if (state.active === id) renderChatHead();
  },
  CONVERSATIONS(args) {
    renderBrowse(Object.entries(args).map(([id, members]) => [Number(id), members]));
  },
  MESSAGE([id, sender, text]) {
    // Conversation 0 is never a real one: a notice from the operator.
    if (id === 0) {
      toast(`Notice from the server: ${text}`);
      return;
    }
    const conv = conversation(id);
    conv.joined = true;
    addLine(conv, { sender, text, time: new Date() });
    const seen = state.active === id && !document.hidden;
    if (!seen) conv.unread += 1;
    renderConvs();
    renderTitle();
  },
  ERROR(text) {
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
  leftConversation(id);
  toast(`Conversation #${id} ended while you were offline.`);
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
    conv = { id, members: [], messages: [], unread: 0, joined: false, label: null };
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
  state.convs.delete(id);
  state.openOnJoin.delete(id);
  if (state.active === id) {
    state.active = null;
    document.body.dataset.view = 'list';
    renderChat();
  }
  renderConvs();
  renderTitle();
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
  state.active = id;
  const conv = state.convs.get(id);
  if (conv) conv.unread = 0;
  document.body.dataset.view = 'chat';
  renderConvs();
  renderChat();
  renderTitle();
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
  text.addEventListener('input', autosize);
  $('composer').addEventListener('submit', (event) => {
    event.preventDefault();
    sendDraft();
  });

  const messages = $('messages');
  messages.addEventListener('scroll', () => {
    if (nearBottom(messages)) $('jump').hidden = true;
  });
  $('jump').addEventListener('click', () => scrollToBottom());

  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && state.active != null) {
      const conv = state.convs.get(state.active);
      if (conv) conv.unread = 0;
      renderConvs();
      renderTitle();
    }
  });
}

function sendDraft() {
  const box = $('text');
  const text = box.value;
  const id = state.active;
  if (!text.trim() || id == null) return;
  if (new TextEncoder().encode(text).length > MAX_MESSAGE_BYTES) {
    toast(`Message too long (at most ${MAX_MESSAGE_BYTES} bytes).`);
    return;
  }
  if (!send('SEND_MESSAGE', [id, text])) {
    toast('Not connected: your message is kept until the connection is back.');
    return;
  }
  box.value = '';
  autosize();
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
  $('send').disabled = !usable;
  $('text').placeholder = usable ? 'Message' : 'Offline: reconnecting…';
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
  $('people').replaceChildren(...others.map(([name, status]) =>
    el('li', { class: state.found.has(name) ? 'person found' : 'person' },
      el('label', {},
        el('input', { type: 'checkbox', value: name, checked: state.selected.has(name) }),
        el('span', { class: `dot ${statusClass(status)}` }),
        el('span', { class: 'person-name' }, name),
        el('span', { class: 'person-status' }, status)))));
  $('people-empty').hidden = others.length > 0;
  $('online-count').textContent = String(others.length + (state.registered ? 1 : 0));
  $('start').disabled = state.selected.size === 0;
}

function renderInvites() {
  const items = [...state.invites.entries()].map(([id, inviter]) =>
    el('li', { class: 'invite' },
      el('span', { class: 'invite-text' }, el('strong', {}, inviter), ' invited you'),
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
  const others = conv.members.filter((name) => !isMe(name));
  if (others.length > 0) return others.join(', ');
  if (conv.label) return conv.label;
  return `Conversation ${conv.id}`;
}

function renderConvs() {
  const convs = [...state.convs.values()].filter((conv) => conv.joined);
  $('convs').replaceChildren(...convs.map((conv) => {
    const last = [...conv.messages].reverse().find((line) => !line.system);
    return el('li', {},
      el('button', {
        type: 'button',
        class: `conv${conv.id === state.active ? ' active' : ''}`,
        'data-conv': conv.id,
        onclick: () => open(conv.id),
      },
      el('span', { class: 'conv-title' }, title(conv), el('span', { class: 'conv-id' }, ` #${conv.id}`)),
      conv.unread > 0 ? el('span', { class: 'badge', 'aria-label': `${conv.unread} unread` }, String(conv.unread)) : null,
      el('span', { class: 'conv-last' }, last ? `${last.sender}: ${last.text}` : 'No messages yet')));
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
  $('chat-members').textContent = `#${conv.id} · ${conv.members.length} member${conv.members.length === 1 ? '' : 's'}: ${conv.members.join(', ')}`;
}

function renderMessages() {
  const conv = state.convs.get(state.active);
  const list = $('messages');
  list.replaceChildren();
  let previous = null;
  for (const line of conv.messages) {
    list.append(lineNode(line, previous));
    previous = line;
  }
  scrollToBottom();
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
  if (line.system) return el('li', { class: 'sys' }, line.system);
  const continued = previous && !previous.system && previous.sender === line.sender
    && line.time - previous.time < 5 * 60 * 1000;
  const kind = `msg${isMe(line.sender) ? ' mine' : ''}${continued ? ' cont' : ''}`;
  return el('li', { class: kind, 'data-sender': line.sender },
    continued ? null : el('div', { class: 'meta' },
      el('span', { class: 'sender' }, line.sender),
      el('time', { datetime: line.time.toISOString() }, timeFormat.format(line.time))),
    el('div', { class: 'text' }, line.text));
}

function nearBottom(list) {
  return list.scrollHeight - list.scrollTop - list.clientHeight < 48;
}

function scrollToBottom() {
  const list = $('messages');
  list.scrollTop = list.scrollHeight;
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
  if (!state.account) showSignin(null, null);
  connect();
}

wireSignin();
wireApp();
setInterval(() => { if (state.conn === 'waiting') renderConn(); }, 1000);
start();

// For tests and the curious: drop the connection to watch the page recover.
window.natter = { dropConnection: () => state.socket?.close() };
