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
// joined after the other, and only that one offers.

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
  registered: false, // the gateway acknowledged my user-joined
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

/** Emits with an ack, so that the gateway's refusals show on the page. */
function emit(event, payload, onOk = () => {}) {
  record('out', event, payload);
  meetup.socket.emit(event, payload, (ack) => {
    if (ack && ack.ok === false) showError(`${event}: ${ack.error?.code} (${ack.error?.message})`);
    else onOk(ack);
  });
}

function register() {
  emit('user-joined', me(), (ack) => {
    meetup.registered = true;
    meetup.username = ack?.user?.username ?? meetup.username; // a token's name claim wins
    render();
    loadHistory();
  });
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

const socket = (meetup.socket = server ? io(server, options) : io(options));

// Server events are handled one at a time, in arrival order, even when a handler waits
// for WebRTC: an answer or ICE candidate is never handled before the offer it follows.
let queue = Promise.resolve();
function on(event, handler) {
  socket.on(event, (payload) => {
    record('in', event, payload);
    queue = queue.then(() => handler(payload ?? {})).catch((err) => showError(`${event}: ${err.message}`));
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
  // A reconnected socket is a new one: register again (the call, if any, is gone).
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
  renderStatus();
  if (meetup.callId) endCall('connection lost');
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
  await pc.setRemoteDescription(offer);
  await flushCandidates(fromUserId, pc);
  await pc.setLocalDescription(await pc.createAnswer());
  emit('webrtc-answer', { callId, targetUserId: fromUserId, answer: pc.localDescription.toJSON() });
});

on('webrtc-answer', async ({ callId, fromUserId, answer }) => {
  const pc = meetup.peers.get(fromUserId);
  if (callId !== meetup.callId || !pc) return;
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
    record('ui', 'peer-state', { userId, state });
    const tile = tileFor(userId);
    tile.dataset.state = state;
    tile.querySelector('figcaption').textContent = captionOf(userId, state);
  };
  return pc;
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
  meetup.peers.get(userId)?.close();
  meetup.peers.delete(userId);
  meetup.pendingCandidates.delete(userId);
  document.querySelector(`.tile[data-user-id="${CSS.escape(userId)}"]`)?.remove();
  renderTitle();
}

/** Leaves the call locally: every connection closed, camera off, back to the lobby. */
function endCall(why) {
  if (why) record('ui', 'call-over', why);
  for (const userId of [...meetup.peers.keys()]) closePeer(userId);
  document.querySelectorAll('.tile.remote').forEach((tile) => tile.remove());
  meetup.pendingCandidates.clear();
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
  if (socket.connected) register(); // else once connected (see 'connect')
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
  tile.innerHTML = '<video autoplay playsinline data-testid="remote-video"></video><figcaption></figcaption>';
  tile.querySelector('figcaption').textContent = captionOf(userId, 'new');
  $('video-grid').append(tile);
  renderTitle();
  return tile;
}

function captionOf(userId, state) {
  const name = meetup.names.get(userId) ?? userId;
  return state === 'connected' ? name : `${name} · ${state === 'new' ? 'connecting' : state}`;
}

function renderTitle() {
  const names = [...document.querySelectorAll('.tile.remote')].map((t) => meetup.names.get(t.dataset.userId) ?? t.dataset.userId);
  $('call-title').textContent = names.length ? `In a call with ${names.join(', ')}` : 'Waiting for the others to join…';
}

function renderStatus() {
  const el = $('connection-status');
  el.textContent = socket.connected ? `online · ${meetup.transport}` : `offline${meetup.connectError ? ` · ${meetup.connectError}` : ''}`;
  el.classList.toggle('ok', socket.connected);
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
