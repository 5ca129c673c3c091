/*
 * MeetUp backend: Node.js reference server (BENCHMARK BASELINE ONLY).
 *
 * A reimplementation of the original MeetUp backend (Node.js + Express +
 * Socket.IO), written from its README and from the top half of PROTOCOL.md,
 * so that the Rust system can be benchmarked side by side against "what the
 * original did". It is not a product and nothing else depends on it.
 *
 * It deliberately keeps the original's simple, single-process design and its
 * costs: two in-memory Maps, a full `users-list` broadcast to every client on
 * every join and every disconnect (O(N) per join), and relays that find the
 * target by scanning onlineUsers. No clustering, no Redis adapter.
 *
 * Deliberate changes from the original (see README.md):
 *  - every handler is wrapped in try/catch, so bad input cannot kill the
 *    process (the original crashed on a `start-call` without `initiator`);
 *  - when the client passes an acknowledgement callback it is answered with
 *    `{ ok: true, ... }` or `{ ok: false, error: { code, message } }`, so a
 *    load generator can measure acked latency the same way on both systems;
 *  - users are sent to clients as `{ id, username, joinedAt }` (no socketId).
 *
 * Environment: PORT (default 3001), CLIENT_URL (default
 * http://localhost:3000; a comma-separated list is accepted),
 * DEBUG_LOG=1 to log every connection and event (off by default so that
 * logging does not dominate benchmark numbers).
 */

'use strict';

const http = require('http');
const express = require('express');
const cors = require('cors');
const { Server } = require('socket.io');

const PORT = process.env.PORT || 3001;
const CLIENT_URL = process.env.CLIENT_URL || 'http://localhost:3000';
const DEBUG_LOG = process.env.DEBUG_LOG === '1';

const origins = CLIENT_URL.split(',').map((s) => s.trim()).filter(Boolean);
const corsOrigin = origins.length === 1 ? origins[0] : origins;

const app = express();
app.use(cors({ origin: corsOrigin, methods: ['GET', 'POST'], credentials: true }));
app.use(express.json());

const server = http.createServer(app);
const io = new Server(server, {
  cors: { origin: corsOrigin, methods: ['GET', 'POST'], credentials: true },
});

// socketId -> { id, username, socketId, joinedAt }
const onlineUsers = new Map();
// callId -> { id, initiator, participants: Map<socketId, User>, isVideo, createdAt }
const activeCalls = new Map();

function log(...args) {
  if (DEBUG_LOG) console.log(...args);
}

class EventError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

function publicUser(user) {
  return { id: user.id, username: user.username, joinedAt: user.joinedAt };
}

function usersList() {
  return Array.from(onlineUsers.values()).map(publicUser);
}

// The original's way of finding a user's socket: a linear scan of onlineUsers.
function findSocketIdByUserId(userId) {
  for (const [socketId, user] of onlineUsers) {
    if (user.id === userId) return socketId;
  }
  return null;
}

function participantsOf(call) {
  return Array.from(call.participants.values());
}

// "Basic validation on socket events": just enough that a handler never
// dereferences something that is not there.
function requireObject(data) {
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    throw new EventError('invalid-payload', 'payload must be an object');
  }
  return data;
}

function requireString(data, field) {
  if (typeof data[field] !== 'string' || data[field].length === 0) {
    throw new EventError('invalid-payload', `${field} must be a non-empty string`);
  }
  return data[field];
}

function requireUserObject(data, field) {
  const u = data[field];
  if (u === null || typeof u !== 'object' || typeof u.id !== 'string') {
    throw new EventError('invalid-payload', `${field} must be an object with an id`);
  }
  return { id: u.id, username: u.username };
}

// Registers a handler that never throws out, and answers the ack if given.
function on(socket, event, handler) {
  socket.on(event, (...args) => {
    const ack = typeof args[args.length - 1] === 'function' ? args.pop() : null;
    try {
      const result = handler(args[0]);
      if (ack) ack({ ok: true, ...(result || {}) });
    } catch (err) {
      const known = err instanceof EventError;
      if (!known) console.error(`error handling ${event} from ${socket.id}:`, err);
      if (ack) {
        ack({
          ok: false,
          error: known
            ? { code: err.code, message: err.message }
            : { code: 'internal', message: 'internal error' },
        });
      }
    }
  });
}

function relay(socket, event, field) {
  on(socket, event, (data) => {
    requireObject(data);
    const callId = requireString(data, 'callId');
    const targetUserId = requireString(data, 'targetUserId');
    const sender = onlineUsers.get(socket.id);
    if (!sender) throw new EventError('not-registered', 'send user-joined first');
    const targetSocketId = findSocketIdByUserId(targetUserId);
    if (!targetSocketId) throw new EventError('user-offline', 'target user is not online');
    io.to(targetSocketId).emit(event, { callId, fromUserId: sender.id, [field]: data[field] });
    log(`${event} ${sender.id} -> ${targetUserId} (call ${callId})`);
  });
}

app.get('/', (req, res) => {
  res.json({
    message: 'MeetUp Backend Server is running!',
    onlineUsers: onlineUsers.size,
    activeCalls: activeCalls.size,
  });
});

io.on('connection', (socket) => {
  log('User connected:', socket.id);

  on(socket, 'user-joined', (data) => {
    requireObject(data);
    const id = requireString(data, 'id');
    const username = requireString(data, 'username');
    const user = { id, username, socketId: socket.id, joinedAt: new Date().toISOString() };
    onlineUsers.set(socket.id, user);

    // The original's join: the whole list to everyone, on every join.
    io.emit('users-list', usersList());
    socket.broadcast.emit('user-joined', publicUser(user));
    log(`User joined: ${username} (${id})`);
    return { user: publicUser(user) };
  });

  on(socket, 'start-call', (data) => {
    requireObject(data);
    const callId = requireString(data, 'id');
    const initiator = requireUserObject(data, 'initiator');
    if (!Array.isArray(data.participants)) {
      throw new EventError('invalid-payload', 'participants must be an array');
    }
    const isVideo = Boolean(data.isVideo);

    const call = {
      id: callId,
      initiator,
      participants: new Map([[socket.id, initiator]]),
      isVideo,
      createdAt: new Date().toISOString(),
    };
    activeCalls.set(callId, call);
    socket.join(callId);

    for (const participant of data.participants) {
      if (!participant || participant.id === initiator.id) continue;
      const targetSocketId = findSocketIdByUserId(participant.id);
      if (targetSocketId) {
        io.to(targetSocketId).emit('incoming-call', { callId, initiator, isVideo });
      }
    }
    socket.emit('call-started', { callId });
    log(`Call started: ${callId} by ${initiator.id}`);
    return { callId };
  });

  on(socket, 'join-call', (data) => {
    requireObject(data);
    const callId = requireString(data, 'callId');
    const user = requireUserObject(data, 'user');
    const call = activeCalls.get(callId);
    if (!call) {
      socket.emit('call-not-found', { callId });
      throw new EventError('call-not-found', 'no such call');
    }
    call.participants.set(socket.id, user);
    socket.join(callId);
    const participants = participantsOf(call);
    socket.to(callId).emit('user-joined-call', { callId, user, participants });
    socket.emit('call-participants', { callId, participants });
    log(`User ${user.id} joined call ${callId}`);
    return { callId, participants };
  });

  on(socket, 'leave-call', (data) => {
    requireObject(data);
    const callId = requireString(data, 'callId');
    const userId = requireString(data, 'userId');
    const call = activeCalls.get(callId);
    let left = false;
    if (call && call.participants.delete(socket.id)) {
      left = true;
      socket.leave(callId);
      const participants = participantsOf(call);
      socket.to(callId).emit('user-left-call', { callId, userId, participants });
      if (call.participants.size === 0) {
        activeCalls.delete(callId);
        log(`Call ended: ${callId}`);
      }
    }
    socket.emit('call-left', { callId });
    return { callId, left };
  });

  relay(socket, 'webrtc-offer', 'offer');
  relay(socket, 'webrtc-answer', 'answer');
  relay(socket, 'webrtc-ice-candidate', 'candidate');

  socket.on('disconnect', () => {
    try {
      const user = onlineUsers.get(socket.id);

      for (const [callId, call] of activeCalls) {
        const participant = call.participants.get(socket.id);
        if (!participant) continue;
        call.participants.delete(socket.id);
        const participants = participantsOf(call);
        const userId = user ? user.id : participant.id;
        io.to(callId).emit('user-left-call', { callId, userId, participants });
        if (call.participants.size === 0) activeCalls.delete(callId);
      }

      if (user) {
        onlineUsers.delete(socket.id);
        io.emit('users-list', usersList());
        socket.broadcast.emit('user-left', user.id);
        log(`User left: ${user.username} (${user.id})`);
      }
      log('User disconnected:', socket.id);
    } catch (err) {
      console.error(`error handling disconnect of ${socket.id}:`, err);
    }
  });
});

server.listen(PORT, () => {
  console.log(`MeetUp reference server running on port ${server.address().port}`);
});
