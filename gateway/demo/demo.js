// MeetUp demo page logic: registers over Socket.IO (PROTOCOL.md) and runs WebRTC mesh video calls.
//
// Query parameters: ?server=http://host:port talks to another gateway (its CLIENT_URL must
// allow this page's origin); ?transport=polling forces HTTP long-polling; ?token=JWT is
// sent in the handshake when the gateway requires authentication (my user id is its `sub`).
//
// Mesh rule (exactly one side offers per pair, so offers never cross):
//   - whoever JOINS a call offers: on `call-participants` (the answer to my join-call) I
//     send an offer to every participant already in the call;
//   - whoever is already in the call waits: on `user-joined-call` I only expect the
//     newcomer's offer, and answer it when it arrives (`webrtc-offer`).
// The call service adds joiners one at a time, so of any two participants exactly one
// joined after the other, and only that one offers (also for ICE restarts).
//
// Calls survive a lost connection (PROTOCOL.md, "Resume"): socket.io-client reconnects by
// itself, and on each new socket the page sends `user-joined` with the `resumeToken` of its
// last registration and the `seq` of the last relay it received (`lastSeq`): the gateway
// hands the old session over, with its calls and the relays kept meanwhile. Peer
// connections and tiles stay up throughout; what the page emits while it is not registered
// waits in an outbox, sent after the resume. A refused resume registers afresh and joins
// the call again if it still exists. Closing the page says goodbye (`socket.disconnect()`),
// so the others see the leave at once instead of after the grace period.

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const server = params.get('server') || undefined; // undefined: the page's own origin
const options = params.get('transport') === 'polling' ? { transports: ['polling'] } : {};
const token = params.get('token');
if (token) options.auth = { token };

// Everything the page knows, exposed for tests and curious people.
const meetup = (window.meetup = {
  socket: null,
  transport: null, // 'polling' | 'websocket'
  userId: null,
  username: null,
  registered: false, // the gateway acknowledged my user-joined (on this socket)
  reconnecting: false, // my connection was lost: down, or up and resuming
  resumeToken: null, // from my last user-joined ack: takes my session over after a disconnect
  lastSeq: 0, // the seq of the last relay I received (sent as lastSeq when resuming)
  outbox: [], // [event, payload, onOk] emitted while not registered, sent once registered
  resumes: [], // { at, resumed, recovered, ms }: my re-registrations after lost connections
  lostAt: null, // when (ms) my connection was last lost
  reconnectingPeers: new Set(), // userIds of peers in my call whose connection is lost
  connectError: null, // why the last connection attempt failed
  users: [], // online users other than me: [{ id, username, joinedAt }]
  names: new Map(), // userId -> username
  callId: null,
  incoming: null, // { callId, initiator, isVideo } waiting for Accept / Decline
  localStream: null,
  peers: new Map(), // userId -> RTCPeerConnection
  pendingCandidates: new Map(), // userId -> ICE candidates that came before the remote description
  iceServers: [],
  history: [], // my recent calls, newest first (get-call-history)
  missed: null, // { count, calls } from the last missed-calls event
  events: [], // { t, dir: 'in' | 'out' | 'ui', event, payload }
});
const me = () => ({ id: meetup.userId, username: meetup.username });

function record(dir, event, payload) {
  meetup.events.push({ t: Date.now(), dir, event, payload });
  if (meetup.events.length > 1000) meetup.events.splice(0, 200);
  const item = document.createElement('li');
  const brief = payload && typeof payload === 'object' ? Object.keys(payload).join(', ') : String(payload ?? '');
  item.textContent = `${new Date().toISOString().slice(11, 23)} ${dir === 'out' ? '→' : dir === 'in' ? '←' : '•'} ${event} ${brief}`;
  $('event-log').prepend(item);
  $('event-log').children[200]?.remove();
}

function showError(message) {
  record('ui', 'error', message);
  $('error').textContent = message;
  $('error').hidden = false;
}

/**
 * Emits with an ack, so that the gateway's refusals show on the page. While I am not
 * registered (my connection was lost), the event waits in the outbox: socket.io-client's
 * own buffer would send it before my user-joined on the new socket, and be refused.
 */
function emit(event, payload, onOk = () => {}) {
  if (!meetup.registered) {
    record('ui', 'queued', event);
    meetup.outbox.push([event, payload, onOk]);
    return;
  }
  record('out', event, payload);
  meetup.socket.emit(event, payload, (ack) => {
    if (ack && ack.ok === false) showError(`${event}: ${ack.error?.code} (${ack.error?.message})`);
    else onOk(ack);
  });
}

/**
 * user-joined: my first registration (resumeToken null: I speak resume, relays get a
 * seq), or after a lost connection the take-over of my session with my resume token.
 */
function register({ fresh = false } = {}) {
  const resuming = meetup.reconnecting && !fresh && meetup.resumeToken !== null;
  const payload = { ...me(), resumeToken: resuming ? meetup.resumeToken : null };
  if (resuming) payload.lastSeq = meetup.lastSeq;
  const sock = socket.id;
  record('out', 'user-joined', payload);
  socket.emit('user-joined', payload, (ack) => {
    if (socket.id !== sock || meetup.registered) return; // an answer to a socket gone since
    if (ack?.ok === false) {
      if (ack.error?.code === 'resume-refused') {
        // My session is gone (the grace ran out): register as someone new.
        record('ui', 'resume-refused', ack.error.message);
        meetup.resumeToken = null;
        return register({ fresh: true });
      }
      showError(`user-joined: ${ack.error?.code} (${ack.error?.message})`);
      // e.g. unavailable: try again while this socket lasts
      if (meetup.reconnecting) setTimeout(() => socket.id === sock && !meetup.registered && register(), 2000);
      return;
    }
    registered(ack ?? {});
  });
}

/** My user-joined was acknowledged on this socket. */
function registered(ack) {
  const wasReconnecting = meetup.reconnecting;
  meetup.registered = true;
  meetup.reconnecting = false;
  meetup.username = ack.user?.username ?? meetup.username; // a token's name claim wins
  if (typeof ack.resumeToken === 'string') meetup.resumeToken = ack.resumeToken;
  if (!ack.resumed) meetup.lastSeq = 0; // a new session numbers its relays from 1
  const outbox = meetup.outbox.splice(0);
  if (wasReconnecting) {
    const ms = meetup.lostAt ? Date.now() - meetup.lostAt : null;
    meetup.resumes.push({ at: Date.now(), resumed: Boolean(ack.resumed), recovered: Boolean(ack.recovered), ms });
    record('ui', ack.resumed ? 'resumed' : 'registered-again', { recovered: Boolean(ack.recovered), ms });
    $('error').hidden = true;
  }
  if (ack.resumed) {
    // Still in my calls: what I said while away goes out now, in order.
    for (const [event, payload, onOk] of outbox) emit(event, payload, onOk);
    // Connections that failed meanwhile are restarted now; all that are not up when
    // relays may have been lost (not recovered).
    enqueue(() => repairPeers(!ack.recovered), 'ICE restart');
  } else {
    // A new session, in no call: relays of the old one are pointless now.
    for (const [event, payload, onOk] of outbox) if (!event.startsWith('webrtc-')) emit(event, payload, onOk);
    if (wasReconnecting && meetup.callId) enqueue(() => rejoinCall());
  }
  render();
  loadHistory();
}

/** My ten most recent calls (the gateway answers with mine only). */
function loadHistory() {
  emit('get-call-history', { limit: 10 }, (ack) => {
    meetup.history = Array.isArray(ack?.calls) ? ack.calls : [];
    renderHistory();
  });
}

/** The STUN/TURN servers the gateway gives me, in RTCConfiguration form (fetched per call: TURN credentials expire). */
async function loadIceServers() {
  try {
    const url = new URL('/ice-servers', server ?? location.origin);
    url.searchParams.set('userId', meetup.userId);
    const res = await fetch(url);
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    setIceServers(await res.json());
  } catch (err) {
    record('ui', 'ice-servers-unavailable', err.message);
  }
}
const setIceServers = ({ iceServers }) => (meetup.iceServers = Array.isArray(iceServers) ? iceServers : []);

/** My user id: the token's subject when there is a token, else made up like the MeetUp frontend. */
function newUserId() {
  try {
    if (token) return JSON.parse(atob(token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/'))).sub;
  } catch {
    // not a readable JWT: the gateway will refuse it anyway
  }
  return Date.now().toString() + Math.random().toString(36).slice(2, 8);
}

// ---- Socket.IO ---------------------------------------------------------------------------

// Reconnection attempts at most 3 s apart (socket.io-client's default is 5 s): a call's
// peers see "reconnecting…" until I am back.
options.reconnectionDelay = 500;
options.reconnectionDelayMax = 3000;
const socket = (meetup.socket = server ? io(server, options) : io(options));

// Server events are handled one at a time, in arrival order, even when a handler waits
// for WebRTC: an answer or ICE candidate is never handled before the offer it follows.
// Work of the page's own (ICE restarts, rejoining) takes its turn in the same queue.
let queue = Promise.resolve();
function enqueue(task, what = 'task') {
  queue = queue.then(task).catch((err) => showError(`${what}: ${err.message}`));
}
function on(event, handler) {
  socket.on(event, (payload) => {
    record('in', event, payload);
    if (typeof payload?.seq === 'number') meetup.lastSeq = payload.seq; // relays are numbered
    enqueue(() => handler(payload ?? {}), event);
  });
}

socket.on('connect', () => {
  meetup.connectError = null;
  meetup.transport = socket.io.engine.transport.name;
  socket.io.engine.once('upgrade', (transport) => {
    meetup.transport = transport.name;
    renderStatus();
  });
  renderStatus();
  // A reconnected socket is a new one: it takes my session over (see register).
  if (meetup.userId) register();
});
socket.on('connect_error', (err) => {
  meetup.connectError = err.message; // e.g. "authentication failed: …" without a valid ?token=
  record('in', 'connect_error', err.message);
  renderStatus();
});
socket.on('disconnect', (reason) => {
  record('in', 'disconnect', reason);
  meetup.registered = false;
  if (reason === 'io client disconnect') {
    // My goodbye (the page is going away): the gateway ends my session at once.
    meetup.reconnecting = false;
  } else if (meetup.userId) {
    // Lost: my session waits for me on the gateways for a while; calls go on meanwhile.
    meetup.reconnecting = true;
    meetup.lostAt = Date.now();
    // The server closed this socket (its gateway is stopping, say): socket.io-client
    // does not come back by itself then.
    if (reason === 'io server disconnect') setTimeout(() => !socket.connected && socket.connect(), 1000);
  }
  render();
});

// Goodbye when the page goes away, so that my peers see me leave now, not after the grace.
window.addEventListener('pagehide', () => {
  if (socket.connected) socket.disconnect();
});
// Back from the back/forward cache: a new socket (my old session is gone).
window.addEventListener('pageshow', (event) => {
  if (event.persisted && !socket.connected) {
    if (meetup.userId) meetup.reconnecting = true;
    socket.connect();
  }
});

on('ice-servers', setIceServers); // also sent by the gateway when I register

// Sent after user-joined when I missed calls since my last visit.
on('missed-calls', (missed) => {
  meetup.missed = missed;
  renderHistory();
});

on('users-list', (users) => {
  meetup.users = (Array.isArray(users) ? users : []).filter((u) => u.id !== meetup.userId);
  for (const u of meetup.users) meetup.names.set(u.id, u.username);
  renderUsers();
});

on('incoming-call', ({ callId, initiator, isVideo }) => {
  meetup.names.set(initiator.id, initiator.username);
  meetup.incoming = { callId, initiator, isVideo };
  $('incoming-caller').textContent = initiator.username;
  $('incoming-call').hidden = false;
});

on('call-participants', async ({ callId, participants }) => {
  if (callId !== meetup.callId) return;
  // I just joined: I offer to everyone who was there before me (see the mesh rule).
  for (const p of participants) {
    meetup.names.set(p.id, p.username);
    if (p.id !== meetup.userId && !meetup.peers.has(p.id)) await sendOffer(p.id);
  }
});

on('user-joined-call', ({ callId, user }) => {
  if (callId !== meetup.callId) return;
  // The newcomer offers to me; show its tile until the offer arrives.
  meetup.names.set(user.id, user.username);
  tileFor(user.id);
});

on('webrtc-offer', async ({ callId, fromUserId, offer }) => {
  if (callId !== meetup.callId) return;
  const pc = peerFor(fromUserId, false);
  // Crossing offers (both restarting): the side that offers by the mesh rule keeps its own.
  if (pc.signalingState === 'have-local-offer' && pc.meetupOffering) return record('ui', 'offer-ignored', fromUserId);
  await pc.setRemoteDescription(offer); // an offer over mine rolls mine back
  await flushCandidates(fromUserId, pc);
  await pc.setLocalDescription(await pc.createAnswer());
  emit('webrtc-answer', { callId, targetUserId: fromUserId, answer: pc.localDescription.toJSON() });
});

on('webrtc-answer', async ({ callId, fromUserId, answer }) => {
  const pc = meetup.peers.get(fromUserId);
  if (callId !== meetup.callId || !pc) return;
  if (pc.signalingState !== 'have-local-offer') return record('ui', 'answer-ignored', fromUserId); // stale
  await pc.setRemoteDescription(answer);
  await flushCandidates(fromUserId, pc);
});

on('webrtc-ice-candidate', async ({ callId, fromUserId, candidate }) => {
  if (callId !== meetup.callId || !candidate) return;
  const pc = meetup.peers.get(fromUserId);
  if (pc?.remoteDescription) return pc.addIceCandidate(candidate);
  // Too early (before its offer or answer): kept until the remote description is set.
  if (!meetup.pendingCandidates.has(fromUserId)) meetup.pendingCandidates.set(fromUserId, []);
  meetup.pendingCandidates.get(fromUserId).push(candidate);
});

on('user-left-call', ({ callId, userId }) => {
  if (callId === meetup.callId) closePeer(userId);
});
// A peer lost its connection to the gateway: it may come back (user-reconnected) or
// leave (user-left-call once its grace is over). Its media may well go on meanwhile.
on('user-reconnecting', ({ callId, userId }) => {
  if (callId !== meetup.callId) return;
  meetup.reconnectingPeers.add(userId);
  if (document.querySelector(`.tile[data-user-id="${CSS.escape(userId)}"]`)) renderTile(userId);
});
on('user-reconnected', ({ callId, userId }) => {
  if (callId !== meetup.callId) return;
  meetup.reconnectingPeers.delete(userId);
  if (document.querySelector(`.tile[data-user-id="${CSS.escape(userId)}"]`)) renderTile(userId);
  // What it missed may have stalled our negotiation: the offering side repairs it.
  const pc = meetup.peers.get(userId);
  if (pc && (pc.connectionState !== 'connected' || pc.signalingState !== 'stable')) return restartIce(userId, 'peer reconnected');
});
on('call-ended', ({ callId }) => callId === meetup.callId && endCall('the call was ended'));
on('call-left', ({ callId }) => callId === meetup.callId && endCall('you were removed from the call'));
on('call-not-found', ({ callId }) => callId === meetup.callId && endCall('that call is over'));

// ---- WebRTC ------------------------------------------------------------------------------

async function getMedia() {
  if (meetup.localStream) return;
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
    if (!meetup.callId) return stream.getTracks().forEach((track) => track.stop()); // call over meanwhile
    meetup.localStream = stream;
    $('local-video').srcObject = stream;
  } catch (err) {
    showError(`No camera or microphone (${err.name}): you will only receive.`);
  }
}

/** The connection to `userId`, created on first use with my camera and microphone on it. */
function peerFor(userId, offering) {
  let pc = meetup.peers.get(userId);
  if (pc) return pc;
  const callId = meetup.callId;
  pc = new RTCPeerConnection({ iceServers: meetup.iceServers });
  pc.meetupOffering = offering; // the side that offers, and restarts ICE
  meetup.peers.set(userId, pc);
  if (meetup.localStream) {
    for (const track of meetup.localStream.getTracks()) pc.addTrack(track, meetup.localStream);
  } else if (offering) {
    pc.addTransceiver('audio', { direction: 'recvonly' });
    pc.addTransceiver('video', { direction: 'recvonly' });
  }
  pc.onicecandidate = ({ candidate }) => {
    if (candidate && meetup.callId === callId) {
      emit('webrtc-ice-candidate', { callId, targetUserId: userId, candidate: candidate.toJSON() });
    }
  };
  const video = tileFor(userId).querySelector('video');
  pc.ontrack = ({ streams: [stream], track }) => {
    video.srcObject = stream ?? new MediaStream([track]);
    video.play().catch(() => {}); // autoplay may wait for a click; the tile still shows
  };
  pc.onconnectionstatechange = () => {
    const state = pc.connectionState;
    if (meetup.peers.get(userId) !== pc) return; // closed and replaced
    record('ui', 'peer-state', { userId, state });
    tileFor(userId).dataset.state = state;
    renderTile(userId);
    clearTimeout(pc.meetupStallTimer);
    // Media lost (after a network change, say): the offering side restarts ICE, at once
    // when it failed, after a while when it is disconnected (it often comes back alone).
    if (state === 'failed') enqueue(() => restartIce(userId, 'failed'), 'ICE restart');
    if (state === 'disconnected') {
      pc.meetupStallTimer = setTimeout(() => {
        if (pc.connectionState === 'disconnected') enqueue(() => restartIce(userId, 'disconnected'), 'ICE restart');
      }, DISCONNECTED_RESTART_MS);
    }
  };
  return pc;
}

meetup.restartIce = (userId, why = 'asked') => enqueue(() => restartIce(userId, why), 'ICE restart'); // for tests

const DISCONNECTED_RESTART_MS = 4000;
const RESTART_EVERY_MS = 5000; // at most one ICE restart per peer this often

/**
 * ICE restart towards `userId`, by the side that offers (mesh rule). Waits for my
 * registration when my own connection is down (the outbox would keep the offer anyway,
 * but a fresh one is better once I am back).
 */
async function restartIce(userId, why) {
  const pc = meetup.peers.get(userId);
  if (!pc || !pc.meetupOffering || pc.signalingState === 'closed' || !meetup.callId) return;
  if (!meetup.registered) {
    pc.meetupRestartPending = why;
    return;
  }
  if (pc.meetupRestartedAt && Date.now() - pc.meetupRestartedAt < RESTART_EVERY_MS) {
    // Too soon after the last one: once more later, if still needed.
    clearTimeout(pc.meetupRetryTimer);
    pc.meetupRetryTimer = setTimeout(() => {
      if (meetup.peers.get(userId) === pc && pc.connectionState !== 'connected') enqueue(() => restartIce(userId, why), 'ICE restart');
    }, RESTART_EVERY_MS);
    return;
  }
  pc.meetupRestartPending = null;
  pc.meetupRestartedAt = Date.now();
  record('ui', 'ice-restart', { userId, why });
  await pc.setLocalDescription(await pc.createOffer({ iceRestart: true }));
  emit('webrtc-offer', { callId: meetup.callId, targetUserId: userId, offer: pc.localDescription.toJSON() });
}

/**
 * After a resume: restarts ICE where it was due while I was away; with `lost` (relays may
 * have been lost: not recovered), also wherever the connection is not up and stable.
 */
async function repairPeers(lost) {
  for (const [userId, pc] of meetup.peers) {
    const stalled = pc.connectionState !== 'connected' || pc.signalingState !== 'stable';
    if (pc.meetupRestartPending || (lost && stalled)) await restartIce(userId, pc.meetupRestartPending ?? 'resumed, not recovered');
  }
}

/** My session is gone (a refused resume): into the call again if it still exists, else out. */
async function rejoinCall() {
  const callId = meetup.callId;
  if (!callId) return;
  record('ui', 'rejoin-call', callId);
  // The others closed their connections to my old session: new ones, offered by me.
  for (const userId of [...meetup.peers.keys()]) closePeer(userId);
  document.querySelectorAll('.tile.remote').forEach((tile) => tile.remove());
  meetup.pendingCandidates.clear();
  meetup.reconnectingPeers.clear();
  renderTitle();
  emit('join-call', { callId, user: me() }); // call-participants, or call-not-found
}

async function sendOffer(userId) {
  const pc = peerFor(userId, true);
  await pc.setLocalDescription(await pc.createOffer());
  emit('webrtc-offer', { callId: meetup.callId, targetUserId: userId, offer: pc.localDescription.toJSON() });
}

async function flushCandidates(userId, pc) {
  const waiting = meetup.pendingCandidates.get(userId) ?? [];
  meetup.pendingCandidates.delete(userId);
  for (const candidate of waiting) await pc.addIceCandidate(candidate);
}

function closePeer(userId) {
  const pc = meetup.peers.get(userId);
  if (pc) {
    clearTimeout(pc.meetupStallTimer);
    clearTimeout(pc.meetupRetryTimer);
    pc.close();
  }
  meetup.peers.delete(userId);
  meetup.pendingCandidates.delete(userId);
  meetup.reconnectingPeers.delete(userId);
  document.querySelector(`.tile[data-user-id="${CSS.escape(userId)}"]`)?.remove();
  renderTitle();
}

/** Leaves the call locally: every connection closed, camera off, back to the lobby. */
function endCall(why) {
  if (why) record('ui', 'call-over', why);
  for (const userId of [...meetup.peers.keys()]) closePeer(userId);
  document.querySelectorAll('.tile.remote').forEach((tile) => tile.remove());
  meetup.pendingCandidates.clear();
  meetup.reconnectingPeers.clear();
  meetup.localStream?.getTracks().forEach((track) => track.stop());
  meetup.localStream = null;
  $('local-video').srcObject = null;
  meetup.callId = null;
  render();
  if (meetup.registered) loadHistory();
}

// ---- Actions -----------------------------------------------------------------------------

function join(event) {
  event.preventDefault();
  const username = $('name-input').value.trim();
  if (!username) return;
  meetup.userId = newUserId();
  meetup.username = username;
  if (socket.connected) register({ fresh: true }); // else once connected (see 'connect')
  render();
}

async function startCall(users) {
  if (!users.length) return;
  record('ui', 'call-clicked', users.map((u) => u.id));
  if (meetup.callId) hangUp();
  const callId = (meetup.callId = `call-${meetup.userId}-${Date.now()}`);
  render();
  await Promise.all([getMedia(), loadIceServers()]);
  if (meetup.callId !== callId) return; // hung up while the camera started
  const participants = users.map(({ id, username }) => ({ id, username }));
  emit('start-call', { id: callId, initiator: me(), participants, isVideo: true });
}

async function accept() {
  const { callId } = meetup.incoming ?? {};
  if (!callId) return;
  record('ui', 'accept-clicked', callId);
  if (meetup.callId) hangUp();
  meetup.incoming = null;
  meetup.callId = callId;
  render();
  await Promise.all([getMedia(), loadIceServers()]);
  if (meetup.callId !== callId) return; // hung up while the camera started
  emit('join-call', { callId, user: me() });
}

function decline() {
  record('ui', 'decline-clicked', meetup.incoming?.callId);
  meetup.incoming = null; // the protocol has no "decline": the caller just waits alone
  render();
}

function hangUp() {
  if (!meetup.callId) return;
  emit('leave-call', { callId: meetup.callId, userId: meetup.userId });
  endCall();
}

// ---- Rendering ---------------------------------------------------------------------------

function tileFor(userId) {
  const found = document.querySelector(`.tile[data-user-id="${CSS.escape(userId)}"]`);
  if (found) return found;
  const tile = document.createElement('figure');
  tile.className = 'tile remote';
  tile.dataset.testid = 'remote-tile';
  tile.dataset.userId = userId;
  tile.dataset.state = 'new';
  tile.innerHTML = '<video autoplay playsinline data-testid="remote-video"></video><figcaption data-testid="remote-caption"></figcaption>';
  $('video-grid').append(tile);
  renderTile(userId);
  renderTitle();
  return tile;
}

/** A tile's caption: the name, the state of our connection, and whether the peer is reconnecting. */
function renderTile(userId) {
  const tile = tileFor(userId);
  const reconnecting = meetup.reconnectingPeers.has(userId);
  tile.dataset.reconnecting = String(reconnecting);
  const name = meetup.names.get(userId) ?? userId;
  const state = tile.dataset.state;
  const notes = [];
  if (reconnecting) notes.push('reconnecting…');
  if (state !== 'connected') notes.push(state === 'new' ? 'connecting' : state);
  tile.querySelector('figcaption').textContent = [name, ...notes].join(' · ');
}

function renderTitle() {
  const names = [...document.querySelectorAll('.tile.remote')].map((t) => meetup.names.get(t.dataset.userId) ?? t.dataset.userId);
  $('call-title').textContent = names.length ? `In a call with ${names.join(', ')}` : 'Waiting for the others to join…';
}

function renderStatus() {
  const el = $('connection-status');
  if (meetup.reconnecting) el.textContent = 'reconnecting…';
  else if (socket.connected) el.textContent = `online · ${meetup.transport}`;
  else el.textContent = `offline${meetup.connectError ? ` · ${meetup.connectError}` : ''}`;
  el.classList.toggle('ok', socket.connected && !meetup.reconnecting);
  el.classList.toggle('warn', meetup.reconnecting);
  $('reconnecting-notice').hidden = !(meetup.reconnecting && meetup.callId);
}

function renderUsers() {
  const list = $('users-list');
  const ticked = new Set(selectedUsers().map((u) => u.id)); // kept across updates of the list
  list.replaceChildren();
  for (const user of meetup.users) {
    const item = document.createElement('li');
    item.dataset.testid = 'user';
    item.dataset.userId = user.id;
    item.dataset.username = user.username;
    item.innerHTML = `<label><input type="checkbox" data-testid="select-user"> <span></span></label>
      <button data-testid="call-button">Call</button>`;
    item.querySelector('span').textContent = user.username;
    item.querySelector('input').checked = ticked.has(user.id);
    item.querySelector('input').onchange = renderSelection;
    item.querySelector('button').onclick = () => startCall([user]);
    list.append(item);
  }
  $('nobody').hidden = meetup.users.length > 0;
  renderSelection();
}

function selectedUsers() {
  return [...document.querySelectorAll('#users-list li')]
    .filter((item) => item.querySelector('input').checked)
    .map((item) => meetup.users.find((u) => u.id === item.dataset.userId))
    .filter(Boolean);
}

function renderSelection() {
  const count = selectedUsers().length;
  $('call-selected-button').disabled = count === 0;
  $('call-selected-button').textContent = count > 1 ? `Group call (${count})` : 'Call selected';
}

/** One line per call: who, when, and what became of it for me. */
function renderHistory() {
  const who = (call) =>
    call.direction === 'outgoing'
      ? `to ${call.attendees.map((a) => a.username).join(', ') || 'nobody'}`
      : `from ${call.initiator.username || 'someone'}`;
  const when = (iso) => new Date(iso).toLocaleString();
  const missed = meetup.missed;
  $('missed-calls').hidden = !missed?.count;
  if (missed?.count) {
    $('missed-calls').textContent = `You missed ${missed.count} call${missed.count > 1 ? 's' : ''}: ` +
      missed.calls.map((c) => `${c.initiator.username || 'someone'} (${when(c.startedAt)})`).join(', ');
  }
  const list = $('history-list');
  list.replaceChildren(
    ...meetup.history.map((call) => {
      const item = document.createElement('li');
      item.dataset.callId = call.callId;
      const outcome = call.outcome ?? (call.attendees.some((a) => a.outcome === 'answered') ? 'answered' : 'unanswered');
      if (call.outcome === 'missed') item.className = 'missed-call';
      item.textContent = `${call.isVideo ? '📹' : '📞'} ${who(call)} · ${when(call.startedAt)} · ${outcome}`;
      return item;
    }),
  );
  $('no-history').hidden = meetup.history.length > 0;
}

function render() {
  const joined = Boolean(meetup.userId);
  $('join-form').hidden = joined;
  $('me-name').textContent = joined ? meetup.username : '';
  $('lobby').hidden = !joined || Boolean(meetup.callId);
  $('history').hidden = !joined || Boolean(meetup.callId);
  $('incoming-call').hidden = !meetup.incoming;
  $('call-view').hidden = !meetup.callId;
  $('call-id').textContent = meetup.callId ?? '';
  renderTitle();
  renderStatus();
}

$('join-form').onsubmit = join;
$('call-selected-button').onclick = () => startCall(selectedUsers());
$('accept-button').onclick = accept;
$('decline-button').onclick = decline;
$('hangup-button').onclick = hangUp;
render();
