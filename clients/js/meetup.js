// MeetUp client: the signaling protocol of PROTOCOL.md as promises and typed events, over socket.io-client.
//
// This file imports nothing, so that a browser can load it as it is (the demo page gets it
// at /demo/meetup.js, next to socket.io.min.js, which defines `globalThis.io`). Node and
// bundlers use `index.js`, which imports socket.io-client and injects its `io`.
//
// What the client does for its user:
//   - every request returns a promise of its acknowledgement, rejected with a MeetUpError
//     (`code` from the server's ack, or `timeout` / `disconnected` / `session-lost` /
//     `connect-failed` from the client) when it is not `{ ok: true }`;
//   - resume (PROTOCOL.md, "Resume"): it registers with `resumeToken: null`, keeps the
//     latest token and the `seq` of the last relay, and on each new socket sends
//     `user-joined` with both; a refused token (`resume-refused`) makes it register afresh;
//   - requests made while a registration is under way (the first one, or after a lost
//     connection) wait in an outbox and go out, in order, once it is acknowledged: sent
//     earlier, socket.io-client would deliver them before `user-joined` on the new socket,
//     and they would be refused. Relays kept across a resume that was not granted are
//     rejected (`session-lost`): they belonged to the calls of the old session;
//   - `users`: the online users by id, exact with full lists and with presence deltas.

/** How long a request waits for its acknowledgement by default. */
export const DEFAULT_ACK_TIMEOUT_MS = 10_000;
/** After a failed re-registration (say `unavailable`), the next try on the same socket. */
const REGISTER_RETRY_MS = 2_000;
/** After the server closed the socket (a gateway stopping), the reconnection attempt. */
const SERVER_CLOSE_RECONNECT_MS = 1_000;

const RELAYS = new Set(['webrtc-offer', 'webrtc-answer', 'webrtc-ice-candidate']);

/** A refused or unanswered request: `code` is the server's ack error code or one of the client's. */
export class MeetUpError extends Error {
  constructor(code, message, event = null) {
    super(event ? `${event}: ${code} (${message})` : `${code} (${message})`);
    this.name = 'MeetUpError';
    this.code = code;
    this.event = event;
  }
}

export class MeetUpClient {
  #identity; // { id, username } once register() was called
  #session; // registered at least once since the last goodbye: a new socket resumes
  #registeringSid; // the socket id whose user-joined is waiting for its ack
  #waiters; // register() promises waiting for the next successful registration
  #outbox; // requests waiting for a registration, in order
  #listeners; // event -> Set of handlers
  #anyListeners; // handlers of every server event
  #closed = false; // I said goodbye (disconnect()) and did not connect() since

  /**
   * Opens the socket at once (unless `socketOptions.autoConnect` is false). `url`
   * undefined or null: the page's own origin.
   */
  constructor(url, options = {}) {
    const {
      io = globalThis.io,
      presence,
      token,
      calling = true,
      ackTimeoutMs = DEFAULT_ACK_TIMEOUT_MS,
      reconnectOnServerClose = true,
      socketOptions = {},
    } = options;
    if (typeof io !== 'function') {
      throw new TypeError('MeetUpClient needs socket.io-client: pass options.io, or load socket.io.min.js first (globalThis.io)');
    }
    this.ackTimeoutMs = ackTimeoutMs;
    this.reconnectOnServerClose = reconnectOnServerClose;
    /** The online users by id (me included), from users-list, user-joined and user-left. */
    this.users = new Map();
    /** My public record from the last user-joined ack. */
    this.user = null;
    /** The user-joined of this socket was acknowledged. */
    this.registered = false;
    /** I was registered and lost my connection: down, or up and resuming. */
    this.reconnecting = false;
    /** From my last user-joined ack: takes my session over on a new socket. */
    this.resumeToken = null;
    /** The seq of the last relay I received (sent as lastSeq when resuming). */
    this.lastSeq = 0;
    /** The last `ice-servers` the gateway sent me. */
    this.iceServers = [];

    this.#identity = null;
    this.#session = false;
    this.#registeringSid = null;
    this.#waiters = [];
    this.#outbox = [];
    this.#listeners = new Map();
    this.#anyListeners = new Set();

    const auth = { ...socketOptions.auth, calling };
    if (presence !== undefined) auth.presence = presence;
    if (token) auth.token = token;
    const opts = { ...socketOptions, auth };
    this.socket = url === undefined || url === null ? io(opts) : io(url, opts);
    this.socket.onAny((event, payload) => this.#incoming(event, payload));
    this.socket.on('connect', () => this.#connected());
    this.socket.on('disconnect', (reason) => this.#disconnected(reason));
    this.socket.on('connect_error', (err) => this.#connectFailed(err));
  }

  /** My user id (null before register). */
  get userId() {
    return this.#identity?.id ?? null;
  }

  /** The socket is connected and my registration on it acknowledged. */
  get ready() {
    return this.socket.connected && this.registered;
  }

  // ---- events ----------------------------------------------------------------------------

  /** Calls `handler(payload)` for each `event`; returns a function that removes it. */
  on(event, handler) {
    if (!this.#listeners.has(event)) this.#listeners.set(event, new Set());
    this.#listeners.get(event).add(handler);
    return () => this.off(event, handler);
  }

  off(event, handler) {
    this.#listeners.get(event)?.delete(handler);
    return this;
  }

  /** Like on(), for the next `event` only. */
  once(event, handler) {
    const off = this.on(event, (payload) => {
      off();
      handler(payload);
    });
    return off;
  }

  /** Calls `handler(event, payload)` for every event the server sends (not the client's own). */
  onAny(handler) {
    this.#anyListeners.add(handler);
    return () => this.#anyListeners.delete(handler);
  }

  #emit(event, payload) {
    for (const handler of [...(this.#listeners.get(event) ?? [])]) call(handler, payload);
  }

  #incoming(event, payload) {
    if (RELAYS.has(event) && typeof payload?.seq === 'number') this.lastSeq = payload.seq;
    let usersChanged = true;
    if (event === 'users-list' && Array.isArray(payload)) {
      this.users = new Map(payload.map((user) => [user.id, user]));
    } else if (event === 'user-joined' && typeof payload?.id === 'string') {
      this.users.set(payload.id, payload); // insert or replace (a new username)
    } else if (event === 'user-left' && typeof payload === 'string') {
      this.users.delete(payload);
    } else {
      usersChanged = false;
      if (event === 'ice-servers' && Array.isArray(payload?.iceServers)) this.iceServers = payload.iceServers;
    }
    for (const handler of [...this.#anyListeners]) call(handler, event, payload);
    this.#emit(event, payload);
    if (usersChanged) this.#emit('users-changed', this.users);
  }

  // ---- connection and registration -------------------------------------------------------

  /**
   * Registers as `{ id, username }` (user-joined), and again on every new socket (a resume).
   * Resolves with the ack of the first registration that succeeds. Again with the same id:
   * refreshes the username; another id is refused (`already-registered`: a new client
   * changes identity).
   */
  register({ id, username }) {
    if (this.#identity && this.#identity.id !== id) {
      return Promise.reject(new MeetUpError('already-registered', 'this client is registered as another user; make a new one', 'user-joined'));
    }
    this.#identity = { id, username };
    return new Promise((resolve, reject) => {
      this.#waiters.push({ resolve, reject });
      if (this.registered) this.#sendRegistration({ refresh: true });
      else if (this.socket.connected && this.#registeringSid !== this.socket.id) this.#sendRegistration();
      else if (!this.socket.active) this.connect(); // after disconnect(), a refused handshake, or autoConnect: false
      // otherwise: sent once connected (see #connected)
    });
  }

  /**
   * Says goodbye (socket.disconnect()): the server ends my session at once, my calls
   * included. Waiting requests are rejected (`disconnected`). connect() opens a new socket,
   * registered afresh as the same user.
   */
  disconnect() {
    this.#closed = true;
    this.socket.disconnect();
    return this;
  }

  /** Opens the socket again after disconnect(). */
  connect() {
    this.#closed = false;
    if (!this.socket.connected) this.socket.connect();
    return this;
  }

  #connected() {
    this.#emit('connect');
    // A new socket: my registration (or the take-over of my session) goes first.
    if (this.#identity && !this.registered && this.#registeringSid !== this.socket.id) this.#sendRegistration();
  }

  #disconnected(reason) {
    this.registered = false;
    this.#registeringSid = null;
    if (reason === 'io client disconnect') {
      // My goodbye: the session ends with it, and so does what waited for it.
      this.#session = false;
      this.reconnecting = false;
      this.resumeToken = null;
      this.lastSeq = 0;
      for (const item of this.#outbox.splice(0)) item.reject(new MeetUpError('disconnected', 'the client disconnected', item.event));
      this.users = new Map();
      this.#emit('users-changed', this.users);
    } else if (this.#session) {
      // Lost: the server keeps my session for its grace period; my calls go on meanwhile.
      this.reconnecting = true;
      // The server closed this socket (its gateway is stopping, say): socket.io-client does
      // not come back by itself then.
      if (reason === 'io server disconnect' && this.reconnectOnServerClose) {
        setTimeout(() => !this.#closed && !this.socket.connected && this.socket.connect(), SERVER_CLOSE_RECONNECT_MS);
      }
    }
    this.#emit('disconnect', reason);
  }

  #connectFailed(err) {
    // Refused by the server (authentication, a bad handshake option): socket.io-client
    // gives up, and so does what waits for a connection. (A failed attempt it will
    // repeat, say while the server restarts, changes nothing.)
    if (!this.socket.active) {
      for (const waiter of this.#waiters.splice(0)) waiter.reject(new MeetUpError('connect-failed', err.message, 'user-joined'));
      for (const item of this.#outbox.splice(0)) item.reject(new MeetUpError('connect-failed', err.message, item.event));
      if (!this.#session) this.#identity = null;
    }
    this.#emit('connect_error', err);
  }

  /**
   * Sends user-joined on the current socket: the take-over of my session when I hold a
   * token and this socket is new, else a registration that speaks resume.
   */
  #sendRegistration({ fresh = false, refresh = false } = {}) {
    const { socket } = this;
    const sid = socket.id;
    const resuming = !fresh && !refresh && this.#session && this.resumeToken !== null;
    const payload = { ...this.#identity, resumeToken: resuming ? this.resumeToken : null };
    if (resuming) payload.lastSeq = this.lastSeq;
    if (!refresh) this.#registeringSid = sid;
    socket.timeout(this.ackTimeoutMs).emit('user-joined', payload, (err, ack) => {
      if (socket.id !== sid || !socket.connected) return; // an answer to a socket gone since: the new one registers
      if (!refresh) this.#registeringSid = null;
      if (!err && ack?.ok !== false) return this.#registered(ack ?? {}, refresh);
      const error = err ? new MeetUpError(errorCode(err), err.message, 'user-joined') : ackError('user-joined', ack);
      if (error.code === 'resume-refused') {
        // My session is gone (its grace ran out): I register as someone new, in no call.
        this.resumeToken = null;
        this.#emit('resume-refused', error);
        return this.#sendRegistration({ fresh: true });
      }
      if (this.#session && !refresh) {
        // e.g. unavailable: my session is still mine to take over; try again while this socket lasts.
        this.#emit('registration-failed', error);
        setTimeout(() => {
          if (socket.id === sid && socket.connected && !this.registered && this.#registeringSid === null) this.#sendRegistration();
        }, REGISTER_RETRY_MS);
        return;
      }
      for (const waiter of this.#waiters.splice(0)) waiter.reject(error);
      if (!this.#session) {
        // Never registered: nothing to wait for any more; the server answers what waited.
        this.#identity = null;
        for (const item of this.#outbox.splice(0)) this.#send(item);
      }
    });
  }

  /** A user-joined of this socket was acknowledged. */
  #registered(ack, refresh) {
    const reconnected = this.reconnecting;
    const sessionLost = this.#session && !refresh && !ack.resumed;
    this.registered = true;
    this.reconnecting = false;
    this.#session = true;
    if (ack.user) {
      this.user = ack.user;
      this.#identity.username = ack.user.username; // a token's name claim wins
    }
    if (typeof ack.resumeToken === 'string') this.resumeToken = ack.resumeToken;
    if (!refresh && !ack.resumed) this.lastSeq = 0; // a new session numbers its relays from 1
    for (const waiter of this.#waiters.splice(0)) waiter.resolve(ack);
    for (const item of this.#outbox.splice(0)) {
      if (sessionLost && RELAYS.has(item.event)) {
        item.reject(new MeetUpError('session-lost', 'the session this relay was for is gone (resume not granted)', item.event));
      } else {
        this.#send(item);
      }
    }
    if (!refresh) this.#emit('registered', { ...ack, resumed: Boolean(ack.resumed), recovered: Boolean(ack.recovered), reconnected });
  }

  // ---- requests --------------------------------------------------------------------------

  /** Emits `event` with an ack; waits in the outbox while a registration is under way. */
  request(event, payload) {
    return new Promise((resolve, reject) => {
      const item = { event, payload, resolve, reject };
      if (this.#closed) reject(new MeetUpError('disconnected', 'the client disconnected (connect() first)', event));
      else if (this.#identity && !this.registered) this.#outbox.push(item);
      else this.#send(item);
    });
  }

  #send({ event, payload, resolve, reject }) {
    this.socket.timeout(this.ackTimeoutMs).emit(event, payload, (err, ack) => {
      if (err) reject(new MeetUpError(errorCode(err), err.message, event));
      else if (ack?.ok === false) reject(ackError(event, ack));
      else resolve(ack);
    });
  }

  #me() {
    return { id: this.#identity?.id ?? '', username: this.#identity?.username ?? '' };
  }

  /**
   * start-call: rings `participants` (user ids or `{ id, username }`). `id` defaults to a
   * new unique call id. Resolves `{ ok, callId }`.
   */
  startCall({ participants, isVideo = true, id = newCallId(this.userId) }) {
    const listed = participants.map((p) => {
      const userId = typeof p === 'string' ? p : p.id;
      const username = (typeof p === 'string' ? undefined : p.username) ?? this.users.get(userId)?.username;
      return username === undefined ? { id: userId } : { id: userId, username };
    });
    return this.request('start-call', { id, initiator: this.#me(), participants: listed, isVideo });
  }

  /** join-call (also to answer an incoming call). Resolves `{ ok, callId, participants }`. */
  joinCall(callId) {
    return this.request('join-call', { callId, user: this.#me() });
  }

  /** leave-call. Resolves `{ ok, callId, left }`. */
  leaveCall(callId) {
    return this.request('leave-call', { callId, userId: this.#me().id });
  }

  /** decline-call: stops my ringing invitation on every device. Resolves `{ ok, callId }`. */
  declineCall(callId) {
    return this.request('decline-call', { callId });
  }

  /** cancel-call: stops the invitations I made that still ring. Resolves `{ ok, callId, cancelled }`. */
  cancelCall(callId) {
    return this.request('cancel-call', { callId });
  }

  /** invite-to-call: rings more users. Resolves `{ ok, callId, invited, busy, unavailable }`. */
  inviteToCall(callId, userIds) {
    return this.request('invite-to-call', { callId, userIds });
  }

  /** call-message: a chat message to everyone in the call. Resolves `{ ok, callId, id, sentAt }`. */
  sendMessage(callId, text) {
    return this.request('call-message', { callId, text });
  }

  sendOffer(callId, targetUserId, offer) {
    return this.request('webrtc-offer', { callId, targetUserId, offer });
  }

  sendAnswer(callId, targetUserId, answer) {
    return this.request('webrtc-answer', { callId, targetUserId, answer });
  }

  sendIceCandidate(callId, targetUserId, candidate) {
    return this.request('webrtc-ice-candidate', { callId, targetUserId, candidate });
  }

  /** get-call-history: my calls, newest first. Resolves `{ ok, calls, next }`. */
  callHistory({ limit, before } = {}) {
    const payload = {};
    if (limit !== undefined) payload.limit = limit;
    if (before !== undefined && before !== null) payload.before = before;
    return this.request('get-call-history', payload);
  }
}

/** A client for `url` (undefined: the page's origin); see MeetUpClient. */
export function connect(url, options) {
  return new MeetUpClient(url, options);
}

function ackError(event, ack) {
  return new MeetUpError(ack.error?.code ?? 'internal', ack.error?.message ?? 'refused without a reason', event);
}

/** socket.io-client fails an ack with "operation has timed out" or, when the socket went, "socket has been disconnected". */
function errorCode(err) {
  return /disconnected/i.test(err?.message ?? '') ? 'disconnected' : 'timeout';
}

function newCallId(userId) {
  return `call-${userId ?? 'anonymous'}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}

/** A handler's exception is reported as uncaught, without stopping the other handlers. */
function call(handler, ...args) {
  try {
    handler(...args);
  } catch (err) {
    queueMicrotask(() => {
      throw err;
    });
  }
}
