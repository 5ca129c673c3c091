// Compile-time checks of meetup.d.ts (npm run typecheck; test/types.test.mjs): what must and must not type-check.
import { MeetUpClient, MeetUpError, connect, type ErrorCode, type PublicUser } from '@meetup/client';
import { MeetUpClient as CoreClient } from '@meetup/client/core';
import { io } from 'socket.io-client';

async function tour(): Promise<void> {
  const client = connect('http://localhost:3000', { presence: 'delta', token: 'jwt', ackTimeoutMs: 5_000 });
  const core = new CoreClient(undefined, { io, socketOptions: { transports: ['websocket'] } });
  core.disconnect();

  const ack = await client.register({ id: 'u1', username: 'Ann' });
  const joinedAt: string = ack.user.joinedAt;
  const token: string | undefined = ack.resumeToken;
  const users: Map<string, PublicUser> = client.users;
  void [joinedAt, token, users];

  const { callId } = await client.startCall({ participants: ['u2', { id: 'u3', username: 'Cy' }] });
  const joined = await client.joinCall(callId);
  const names: string[] = joined.participants.map((p) => p.username);
  const left: boolean = (await client.leaveCall(callId)).left;
  const cancelled: string[] = (await client.cancelCall(callId)).cancelled;
  const { invited, busy, unavailable } = await client.inviteToCall(callId, ['u4']);
  const sentAt: string = (await client.sendMessage(callId, 'hi')).sentAt;
  await client.declineCall(callId);
  await client.sendOffer(callId, 'u2', { type: 'offer', sdp: 'v=0' });
  await client.sendAnswer(callId, 'u2', { type: 'answer', sdp: 'v=0' });
  await client.sendIceCandidate(callId, 'u2', { candidate: 'candidate:1', sdpMid: '0' });
  const history = await client.callHistory({ limit: 10 });
  const next: string | null = history.next;
  const outcome = history.calls[0]?.attendees[0]?.outcome;
  const raw = await client.request('call-message', { callId, text: 'raw' });
  void [names, left, cancelled, invited, busy, unavailable, sentAt, next, outcome, raw.id];

  client.on('incoming-call', ({ callId: id, initiator, isVideo }) => void [id, initiator.username, isVideo]);
  client.on('invite-ended', ({ reason }) => {
    const r: 'declined' | 'cancelled' | 'missed' | 'answered-elsewhere' = reason;
    void r;
  });
  client.on('call-declined', ({ userId }) => void userId);
  client.on('call-unanswered', ({ userId }) => void userId);
  client.on('user-busy', ({ userId }) => void userId);
  client.on('user-unavailable', ({ userId }) => void userId);
  client.on('call-message', ({ from, text }) => void [from.kind, text]);
  client.on('call-messages', ({ messages }) => void messages.map((m) => m.sentAt));
  client.on('webrtc-offer', ({ seq, fromUserId, offer }) => void [seq, fromUserId, offer]);
  client.on('users-list', (list) => void list.map((u) => u.joinedAt));
  client.on('user-left', (userId) => void userId.toUpperCase());
  client.on('missed-calls', ({ count, calls }) => void [count, calls[0]?.direction]);
  client.on('ice-servers', ({ iceServers, ttl }) => void [iceServers[0]?.urls, ttl]);
  client.on('user-reconnecting', ({ userId }) => void userId);
  client.on('registered', ({ resumed, recovered, reconnected }) => void [resumed, recovered, reconnected]);
  client.on('resume-refused', (err) => void err.code);
  client.on('users-changed', (map) => void map.size);
  client.on('disconnect', (reason) => void reason);
  client.on('connect', () => undefined);
  const off = client.on('app:score', (payload: unknown) => void payload);
  off();
  client.onAny((event, payload) => {
    if (event === 'call-message') void payload.text;
  });

  try {
    await client.joinCall('nope');
  } catch (err) {
    if (err instanceof MeetUpError) {
      const code: ErrorCode = err.code;
      if (code === 'call-not-found' || code === 'timeout' || code === 'not-invited') void code;
    }
  }

  // @ts-expect-error: not an event of the protocol
  client.on('incoming-cal', () => undefined);
  // @ts-expect-error: invite-ended carries a reason, not a userId
  client.on('invite-ended', ({ userId }) => void userId);
  // @ts-expect-error: invite-to-call takes an array of user ids
  await client.inviteToCall(callId, 'u4');
  // @ts-expect-error: the presence mode is "full" or "delta"
  connect('http://x', { presence: 'partial' });
  // @ts-expect-error: call-message needs its text
  await client.request('call-message', { callId });
  // @ts-expect-error: not an error code
  const wrong: ErrorCode = 'call-missing';
  void wrong;
}
void tour;
