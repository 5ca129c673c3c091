// MeetUp demo page logic: signaling through the MeetUp client module (/demo/meetup.js), WebRTC mesh video calls, ringing and in-call chat.
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
// Calls survive a lost connection (PROTOCOL.md, "Resume"): the client module reconnects,
// takes my session over with its resume token and the seq of the last relay, and holds
// back what the page sends until then. Peer connections and tiles stay up throughout. A
// refused resume registers afresh (the module does that) and the page joins the call again
// if it still exists. Closing the page says goodbye (`disconnect()`), so the others see the
// leave at once instead of after the grace period.
//
// Ringing (PROTOCOL.md, "Calling"): an incoming call rings (a tone and a pulse) until I
// accept or decline it, or the server ends the invitation (`invite-ended`: cancelled,
// missed, answered on another device). As the caller I see who declined, did not answer,
// is busy or is unavailable, can cancel while it rings, and add people during a call.
import { MeetUpClient } from './meetup.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const server = params.get('server') || undefined; // undefined: the page's own origin
const token = params.get('token');

// Reconnection attempts at most 3 s apart (socket.io-client's default is 5 s): a call's
// peers see "reconnecting…" until I am back.
const socketOptions = { reconnectionDelay: 500, reconnectionDelayMax: 3000 };
if (params.get('transport') === 'polling') socketOptions.transports = ['polling'];
const client = new MeetUpClient(server, { token: token || undefined, socketOptions });
const socket = client.socket;

// Everything the page knows, exposed for tests and curious people.
const meetup = (window.meetup = {
  client,
  socket,
  transport: null, // 'polling' | 'websocket'
  userId: null,
  username: null,
  /** The gateway acknowledged my user-joined on this socket. */
  get registered() {
    return client.registered;
  },
  /** My connection was lost: down, or up and resuming. */
  get reconnecting() {
    return client.reconnecting;
  },
  get resumeToken() {
    return client.resumeToken;
  },
  get lastSeq() {
    return client.lastSeq;
  },
  /** Online users other than me: [{ id, username, joinedAt }]. */
  get users() {
    return [...client.users.values()].filter((u) => u.id !== meetup.userId);
  },
  resumes: [], // { at, resumed, recovered, ms }: my re-registrations after lost connections
  lostAt: null, // when (ms) my connection was last lost
  reconnectingPeers: new Set(), // userIds of peers in my call whose connection is lost
  connectError: null, // why the last connection attempt failed
  names: new Map(), // userId -> username
  callId: null,
  incoming: null, // { callId, initiator, isVideo } ringing, waiting for Accept / Decline
  ringing: false, // the ring (tone and pulse) is on
  invited: new Set(), // userIds my invitations ring for, in my current call
  notices: [], // { kind, userId, text }: what became of my invitations, and of incoming calls
  chat: [], // messages of my current call, in the order the server gave them
  localStream: null,
  peers: new Map(), // userId -> RTCPeerConnection
  pendingCandidates: new Map(), // userId -> ICE candidates that came before the remote description
  iceServers: [],
  history: [], // my recent calls, newest first (get-call-history)
  missed: null, // { count, calls } from the last missed-calls event
  events: [], // { t, dir: 'in' | 'out' | 'ui', event, payload }
});
const me = () => ({ id: meetup.userId, username: meetup.username });
const nameOf = (userId) => meetup.names.get(userId) ?? client.users.get(userId)?.username ?? userId;

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

// Refusals that are no news: a relay of a session that is gone (its resume was refused),
// and what was waiting when the page said goodbye.
const QUIET = new Set(['session-lost', 'disconnected']);

/**
 * Logs a request of the client module and shows its refusal on the page. The module holds
 * requests back while I am not registered (after a lost connection) and sends them after
 * the resume, in order.
 */
function act(event, payload, request, onOk = () => {}) {
  record('out', event, payload);
  return request.then(onOk, (err) => {
    if (QUIET.has(err.code)) record('ui', 'dropped', { event, code: err.code });
    else showError(err.message);
  });
}

/** My ten most recent calls (the gateway answers with mine only). */
function loadHistory() {
  act('get-call-history', { limit: 10 }, client.callHistory({ limit: 10 }), (ack) => {
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

// ---- Signaling -----------------------------------------------------------------------------

// Server events are handled one at a time, in arrival order, even when a handler waits
// for WebRTC: an answer or ICE candidate is never handled before the offer it follows.
// Work of the page's own (ICE restarts, rejoining) takes its turn in the same queue.
let queue = Promise.resolve();
function enqueue(task, what = 'task') {
  queue = queue.then(task).catch((err) => showError(`${what}: ${err.message}`));
}
function on(event, handler) {
  client.on(event, (payload) => enqueue(() => handler(payload ?? {}), event));
}
client.onAny((event, payload) => record('in', event, payload));

client.on('connect', () => {
  meetup.connectError = null;
  meetup.transport = socket.io.engine.transport.name;
  socket.io.engine.once('upgrade', (transport) => {
    meetup.transport = transport.name;
    renderStatus();
  });
  renderStatus();
});
client.on('connect_error', (err) => {
  meetup.connectError = err.message; // e.g. "authentication failed: …" without a valid ?token=
  record('in', 'connect_error', err.message);
  renderStatus();
});
client.on('disconnect', (reason) => {
  record('in', 'disconnect', reason);
  if (client.reconnecting) meetup.lostAt = Date.now(); // my session waits for me on the gateways
  render();
});
client.on('resume-refused', (err) => record('ui', 'resume-refused', err.message)); // the module registers afresh
client.on('registration-failed', (err) => showError(err.message)); // e.g. unavailable: the module tries again
client.on('registered', registered);

// Goodbye when the page goes away, so that my peers see me leave now, not after the grace.
window.addEventListener('pagehide', () => {
  if (socket.connected) client.disconnect();
});
// Back from the back/forward cache: a new socket, registered afresh (my old session is gone).
window.addEventListener('pageshow', (event) => {
  if (event.persisted && !socket.connected) {
    meetup.lostAt = Date.now();
    client.connect();
  }
});

/** A user-joined of mine was acknowledged: the first, after a resume, or afresh. */
function registered(ack) {
  meetup.username = ack.user?.username ?? meetup.username; // a token's name claim wins
  const again = ack.reconnected || meetup.lostAt !== null;
  if (again) {
    const ms = meetup.lostAt ? Date.now() - meetup.lostAt : null;
    meetup.lostAt = null;
    meetup.resumes.push({ at: Date.now(), resumed: ack.resumed, recovered: ack.recovered, ms });
    record('ui', ack.resumed ? 'resumed' : 'registered-again', { recovered: ack.recovered, ms });
    $('error').hidden = true;
  }
  if (ack.resumed) {
    // Still in my calls. Connections that failed meanwhile are restarted now; all that are
    // not up when relays may have been lost (not recovered).
    enqueue(() => repairPeers(!ack.recovered), 'ICE restart');
  } else if (meetup.callId) {
    // A new session, in no call: into mine again if it still exists.
    enqueue(() => rejoinCall());
  }
  render();
  loadHistory();
}

on('ice-servers', setIceServers); // also sent by the gateway when I register

// Sent after user-joined when I missed calls since my last visit.
on('missed-calls', (missed) => {
  meetup.missed = missed;
  renderHistory();
});

on('users-list', (users) => {
  for (const u of Array.isArray(users) ? users : []) meetup.names.set(u.id, u.username);
  renderUsers();
});
on('user-joined', (user) => {
  if (user.id) meetup.names.set(user.id, user.username);
  renderUsers();
});
on('user-left', () => renderUsers());

on('incoming-call', ({ callId, initiator, isVideo }) => {
  if (callId === meetup.callId) return; // rung again for the call I am in (another device joined)
  meetup.names.set(initiator.id, initiator.username);
  meetup.incoming = { callId, initiator, isVideo };
  $('incoming-caller').textContent = initiator.username;
  render();
});

// My invitation stopped ringing: I declined (here or on another device), the caller
// cancelled, nobody answered in time, or another device of mine answered.
on('invite-ended', ({ callId, reason }) => {
  if (meetup.incoming?.callId !== callId) return;
  const { initiator } = meetup.incoming;
  meetup.incoming = null;
  const who = initiator.username;
  const text = { cancelled: `${who} cancelled the call`, missed: `Missed call from ${who}`, 'answered-elsewhere': 'Answered on another device' }[reason];
  if (text) notice(reason, initiator.id, text);
  render();
});

// What became of the invitations I made (as the caller, or by adding people).
on('call-declined', ({ callId, userId }) => invitationEnded(callId, userId, 'declined', `${nameOf(userId)} declined`));
on('call-unanswered', ({ callId, userId }) => invitationEnded(callId, userId, 'no-answer', `${nameOf(userId)}: no answer`));
on('user-unavailable', ({ callId, userId }) => invitationEnded(callId, userId, 'unavailable', `${nameOf(userId)} is unavailable`));
on('user-busy', ({ callId, userId }) => {
  if (callId === meetup.callId) notice('busy', userId, `${nameOf(userId)} is busy (in another call): ringing anyway`);
});

on('call-participants', async ({ callId, participants }) => {
  if (callId !== meetup.callId) return;
  // I just joined: I offer to everyone who was there before me (see the mesh rule).
  for (const p of participants) {
    meetup.names.set(p.id, p.username);
    meetup.invited.delete(p.id);
    if (p.id !== meetup.userId && !meetup.peers.has(p.id)) await sendOffer(p.id);
  }
  render();
});

on('user-joined-call', ({ callId, user }) => {
  if (callId !== meetup.callId) return;
  // The newcomer offers to me; show its tile until the offer arrives.
  meetup.names.set(user.id, user.username);
  meetup.invited.delete(user.id);
  tileFor(user.id);
  render();
});

on('webrtc-offer', async ({ callId, fromUserId, offer }) => {
  if (callId !== meetup.callId) return;
  const pc = peerFor(fromUserId, false);
  // Crossing offers (both restarting): the side that offers by the mesh rule keeps its own.
  if (pc.signalingState === 'have-local-offer' && pc.meetupOffering) return record('ui', 'offer-ignored', fromUserId);
  await pc.setRemoteDescription(offer); // an offer over mine rolls mine back
  await flushCandidates(fromUserId, pc);
  await pc.setLocalDescription(await pc.createAnswer());
  act('webrtc-answer', { callId, targetUserId: fromUserId }, client.sendAnswer(callId, fromUserId, pc.localDescription.toJSON()));
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

// In-call chat: every participant gets every message (mine too), in the same order.
on('call-message', (message) => {
  if (message.callId !== meetup.callId || meetup.chat.some((m) => m.id === message.id)) return;
  meetup.chat.push(message);
  renderChat();
});
// The call's recent messages, when I join (or resume): they come first, then what I had.
on('call-messages', ({ callId, messages }) => {
  if (callId !== meetup.callId || !Array.isArray(messages)) return;
  const given = new Set(messages.map((m) => m.id));
  meetup.chat = [...messages, ...meetup.chat.filter((m) => !given.has(m.id))];
  renderChat();
});

// ---- Ringing and invitations ---------------------------------------------------------------

/** Adds a line to the notices (shown in the lobby and in the call). */
function notice(kind, userId, text) {
  meetup.notices.push({ kind, userId, text, at: Date.now() });
  if (meetup.notices.length > 5) meetup.notices.shift();
  record('ui', 'notice', { kind, userId });
  renderNotices();
}

/**
 * An invitation I made ended unanswered. When nobody is in the call with me and none of
 * my invitations rings any more, the call is over for me too.
 */
function invitationEnded(callId, userId, kind, text) {
  if (callId !== meetup.callId) return;
  meetup.invited.delete(userId);
  notice(kind, userId, text);
  if (meetup.invited.size === 0 && remoteTiles().length === 0) hangUp('nobody answered');
  else render();
}

// The ring: a two-tone beep through WebAudio (when the page may play sound) and a pulse.
const RING_ON_MS = 1000;
const RING_EVERY_MS = 3000;
let ringTone = null; // { context, timer }

function startRing() {
  meetup.ringing = true;
  if (ringTone) return;
  try {
    const context = new AudioContext();
    const beep = () => {
      const gain = context.createGain();
      gain.gain.value = 0.08;
      gain.connect(context.destination);
      for (const [freq, at] of [[440, 0], [480, 0]]) {
        const tone = context.createOscillator();
        tone.frequency.value = freq;
        tone.connect(gain);
        tone.start(context.currentTime + at);
        tone.stop(context.currentTime + RING_ON_MS / 1000);
      }
    };
    beep();
    ringTone = { context, timer: setInterval(beep, RING_EVERY_MS) };
  } catch (err) {
    record('ui', 'ring-silent', err.message); // no WebAudio: the pulse alone
  }
}

function stopRing() {
  meetup.ringing = false;
  if (!ringTone) return;
  clearInterval(ringTone.timer);
  ringTone.context.close().catch(() => {});
  ringTone = null;
}

// ---- WebRTC --------------------------------------------------------------------------------

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
      act('webrtc-ice-candidate', { callId, targetUserId: userId }, client.sendIceCandidate(callId, userId, candidate.toJSON()));
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
 * registration when my own connection is down (the module would hold the offer back
 * anyway, but a fresh one is better once I am back).
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
  const callId = meetup.callId;
  act('webrtc-offer', { callId, targetUserId: userId }, client.sendOffer(callId, userId, pc.localDescription.toJSON()));
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
  meetup.invited.clear(); // my invitations went with my session
  render();
  act('join-call', { callId }, client.joinCall(callId)); // call-participants, or call-not-found
}

async function sendOffer(userId) {
  const pc = peerFor(userId, true);
  await pc.setLocalDescription(await pc.createOffer());
  const callId = meetup.callId;
  act('webrtc-offer', { callId, targetUserId: userId }, client.sendOffer(callId, userId, pc.localDescription.toJSON()));
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
  meetup.invited.clear();
  meetup.chat = [];
  meetup.localStream?.getTracks().forEach((track) => track.stop());
  meetup.localStream = null;
  $('local-video').srcObject = null;
  meetup.callId = null;
  $('add-people').hidden = true;
  render();
  renderChat();
  if (meetup.registered) loadHistory();
}

// ---- Actions -------------------------------------------------------------------------------

function join(event) {
  event.preventDefault();
  const username = $('name-input').value.trim();
  if (!username) return;
  meetup.userId = newUserId();
  meetup.username = username;
  record('out', 'user-joined', me());
  // Sent once the socket is up; again (resuming) on every new socket.
  client.register(me()).catch((err) => showError(err.message));
  render();
}

async function startCall(users) {
  if (!users.length) return;
  record('ui', 'call-clicked', users.map((u) => u.id));
  if (meetup.callId) hangUp();
  const callId = (meetup.callId = `call-${meetup.userId}-${Date.now()}`);
  meetup.notices = [];
  // Ringing from now on: user-unavailable may come before the start-call ack.
  for (const u of users) meetup.invited.add(u.id);
  render();
  await Promise.all([getMedia(), loadIceServers()]);
  if (meetup.callId !== callId) return; // hung up while the camera started
  const participants = users.map(({ id, username }) => ({ id, username }));
  act('start-call', { id: callId, participants }, client.startCall({ id: callId, participants, isVideo: true }));
}

async function accept() {
  const { callId } = meetup.incoming ?? {};
  if (!callId) return;
  record('ui', 'accept-clicked', callId);
  if (meetup.callId) hangUp();
  meetup.incoming = null;
  meetup.callId = callId;
  meetup.notices = [];
  render();
  await Promise.all([getMedia(), loadIceServers()]);
  if (meetup.callId !== callId) return; // hung up while the camera started
  act('join-call', { callId }, client.joinCall(callId));
}

/** Declines the ringing call: the caller is told, and my other devices stop ringing. */
function decline() {
  const callId = meetup.incoming?.callId;
  if (!callId) return;
  record('ui', 'decline-clicked', callId);
  meetup.incoming = null;
  render();
  act('decline-call', { callId }, client.declineCall(callId));
}

/** Stops the invitations of mine that still ring; alone in the call, I leave it too. */
function cancel() {
  const callId = meetup.callId;
  if (!callId || meetup.invited.size === 0) return;
  record('ui', 'cancel-clicked', callId);
  act('cancel-call', { callId }, client.cancelCall(callId), ({ cancelled }) => {
    for (const userId of cancelled ?? []) meetup.invited.delete(userId);
    if (callId !== meetup.callId) return;
    notice('cancelled', null, 'Call cancelled');
    if (remoteTiles().length === 0) hangUp();
    else render();
  });
  meetup.invited.clear();
  render();
}

/** Rings the users ticked in "Add people". */
function invite() {
  const callId = meetup.callId;
  const userIds = [...document.querySelectorAll('#add-people-list input:checked')].map((box) => box.closest('li').dataset.userId);
  if (!callId || userIds.length === 0) return;
  record('ui', 'invite-clicked', userIds);
  const before = new Set(meetup.invited);
  for (const id of userIds) meetup.invited.add(id); // user-unavailable may come before the ack
  $('add-people').hidden = true;
  act('invite-to-call', { callId, userIds }, client.inviteToCall(callId, userIds), ({ invited }) => {
    const ringing = new Set(invited);
    for (const id of userIds) if (!ringing.has(id) && !before.has(id)) meetup.invited.delete(id);
    render();
  });
  render();
}

function sendChat(event) {
  event.preventDefault();
  const text = $('chat-input').value.trim();
  if (!text || !meetup.callId) return;
  $('chat-input').value = '';
  act('call-message', { callId: meetup.callId }, client.sendMessage(meetup.callId, text)); // shown when the server sends it to all
}

function hangUp(why) {
  if (!meetup.callId) return;
  const callId = meetup.callId;
  act('leave-call', { callId }, client.leaveCall(callId));
  endCall(why);
}

// ---- Rendering -----------------------------------------------------------------------------

const remoteTiles = () => [...document.querySelectorAll('.tile.remote')];

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
  const state = tile.dataset.state;
  const notes = [];
  if (reconnecting) notes.push('reconnecting…');
  if (state !== 'connected') notes.push(state === 'new' ? 'connecting' : state);
  tile.querySelector('figcaption').textContent = [nameOf(userId), ...notes].join(' · ');
}

function renderTitle() {
  const names = remoteTiles().map((t) => nameOf(t.dataset.userId));
  const ringing = [...meetup.invited].map(nameOf);
  $('call-title').textContent = names.length
    ? `In a call with ${names.join(', ')}`
    : ringing.length
      ? `Calling ${ringing.join(', ')}…`
      : 'Waiting for the others to join…';
  $('ringing-status').hidden = ringing.length === 0 || names.length === 0;
  $('ringing-status').textContent = `Ringing ${ringing.join(', ')}…`;
  $('cancel-button').hidden = ringing.length === 0;
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
  const users = meetup.users;
  list.replaceChildren();
  for (const user of users) {
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
  $('nobody').hidden = users.length > 0;
  renderSelection();
  if (!$('add-people').hidden) renderAddPeople();
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

/** "Add people": the online users who are neither in my call nor rung for it. */
function renderAddPeople() {
  const inCall = new Set(remoteTiles().map((t) => t.dataset.userId));
  const candidates = meetup.users.filter((u) => !inCall.has(u.id) && !meetup.invited.has(u.id));
  const list = $('add-people-list');
  list.replaceChildren(
    ...candidates.map((user) => {
      const item = document.createElement('li');
      item.dataset.testid = 'add-user';
      item.dataset.userId = user.id;
      item.innerHTML = '<label><input type="checkbox" data-testid="add-select-user"> <span></span></label>';
      item.querySelector('span').textContent = user.username;
      return item;
    }),
  );
  $('add-nobody').hidden = candidates.length > 0;
  $('invite-button').disabled = candidates.length === 0;
}

function renderNotices() {
  $('call-notices').replaceChildren(
    ...meetup.notices.map(({ kind, userId, text }) => {
      const item = document.createElement('li');
      item.dataset.testid = 'call-notice';
      item.dataset.kind = kind;
      if (userId) item.dataset.userId = userId;
      item.textContent = text;
      return item;
    }),
  );
  $('call-notices').hidden = meetup.notices.length === 0;
}

function renderChat() {
  const list = $('chat-messages');
  const mine = (m) => m.from?.id === meetup.userId;
  list.replaceChildren(
    ...meetup.chat.map((m) => {
      const item = document.createElement('li');
      item.dataset.testid = 'chat-message';
      item.dataset.messageId = m.id;
      item.dataset.fromId = m.from?.id ?? '';
      item.className = mine(m) ? 'mine' : m.from?.kind ?? '';
      item.innerHTML = '<span class="from" data-testid="chat-from"></span><span class="text" data-testid="chat-text"></span>';
      item.querySelector('.from').textContent = mine(m) ? 'You' : m.from?.username ?? '?';
      item.querySelector('.text').textContent = m.text;
      item.title = m.sentAt;
      return item;
    }),
  );
  list.scrollTop = list.scrollHeight;
  $('chat-empty').hidden = meetup.chat.length > 0;
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
  $('incoming-call').dataset.ringing = String(Boolean(meetup.incoming));
  if (meetup.incoming) startRing();
  else stopRing();
  $('call-view').hidden = !meetup.callId;
  $('call-id').textContent = meetup.callId ?? '';
  renderTitle();
  renderStatus();
  renderNotices();
}

$('join-form').onsubmit = join;
$('call-selected-button').onclick = () => startCall(selectedUsers());
$('accept-button').onclick = accept;
$('decline-button').onclick = decline;
$('hangup-button').onclick = () => hangUp();
$('cancel-button').onclick = cancel;
$('add-people-button').onclick = () => {
  $('add-people').hidden = !$('add-people').hidden;
  if (!$('add-people').hidden) renderAddPeople();
};
$('invite-button').onclick = invite;
$('chat-form').onsubmit = sendChat;
render();
renderChat();
