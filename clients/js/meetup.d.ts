// Types of the MeetUp signaling protocol (PROTOCOL.md and its extensions) and of the client in meetup.js.
import type { ManagerOptions, Socket, SocketOptions, io as socketIo } from 'socket.io-client';

// ---- values on the wire ----------------------------------------------------------------

/** Any JSON value: offers, answers and candidates are relayed as they were sent. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/**
 * What a relay carries when sent: any value JSON can encode (an RTCSessionDescriptionInit,
 * an RTCIceCandidateInit, ...). Received, it is `Json`: cast it to what the peer sent.
 */
export type RelayBody = unknown;

/** A user as the server names it in calls: the sender's registered identity. */
export interface UserRef {
  id: string;
  username: string;
}

/** A public user record: exactly these fields reach clients. */
export interface PublicUser extends UserRef {
  /** When the user came online, ISO 8601 UTC, stamped by the server. */
  joinedAt: string;
}

/** Who sent a chat message: a user, or (through the gRPC API) a bot or the system. */
export interface ChatSender extends UserRef {
  /** Absent for users; `bot:<name>` / `system` ids carry it. */
  kind?: 'bot' | 'system';
}

/** One call in `get-call-history` and `missed-calls`, seen from the requesting user's side. */
export interface CallRecord {
  callId: string;
  isVideo: boolean;
  startedAt: string | null;
  /** null while the call is live. */
  endedAt: string | null;
  /** id and username "" if the initiator asked to be forgotten. */
  initiator: UserRef;
  /** outgoing: the user started it. */
  direction: 'outgoing' | 'incoming';
  /** The user's own outcome; null on outgoing calls. */
  outcome: AttendeeOutcome | null;
  attendees: CallAttendee[];
}

export type AttendeeOutcome = 'ringing' | 'answered' | 'declined' | 'missed' | 'cancelled' | 'busy';

export interface CallAttendee extends UserRef {
  invitedAt: string | null;
  joinedAt: string | null;
  leftAt: string | null;
  outcome: AttendeeOutcome | null;
}

/** An `RTCConfiguration.iceServers` entry: STUN, or TURN with REST API credentials. */
export interface IceServer {
  urls: string | string[];
  username?: string;
  credential?: string;
}

// ---- acknowledgements -----------------------------------------------------------------

/** The `code` of a refused request (PROTOCOL.md, "Acknowledgements"). */
export type AckErrorCode =
  | 'invalid-payload'
  | 'payload-too-large'
  | 'not-registered'
  | 'already-registered'
  | 'call-exists'
  | 'call-not-found'
  | 'not-in-call'
  | 'not-invited'
  | 'user-offline'
  | 'forbidden'
  | 'too-many-sockets'
  | 'call-full'
  | 'too-many-calls'
  | 'rate-limited'
  | 'overloaded'
  | 'unavailable'
  | 'resume-refused'
  | 'internal';

/**
 * Failures the client reports itself: no ack in time (`timeout`), the socket went before
 * the ack came or the client said goodbye (`disconnected`), a relay kept across a resume
 * that was not granted (`session-lost`), the handshake was refused (`connect-failed`).
 */
export type ClientErrorCode = 'timeout' | 'disconnected' | 'session-lost' | 'connect-failed';

export type ErrorCode = AckErrorCode | ClientErrorCode;

/** A refused acknowledgement as the server sends it. */
export interface AckFailure {
  ok: false;
  error: { code: AckErrorCode; message: string };
}

export interface UserJoinedAck {
  ok: true;
  user: PublicUser;
  /** With RESUME_GRACE_MS above 0: keep the latest one. */
  resumeToken?: string;
  /** This socket took an away session over. */
  resumed?: boolean;
  /** Nothing addressed to the session was lost while it was away. */
  recovered?: boolean;
}
export interface StartCallAck {
  ok: true;
  callId: string;
}
export interface JoinCallAck {
  ok: true;
  callId: string;
  participants: UserRef[];
}
export interface LeaveCallAck {
  ok: true;
  callId: string;
  /** false when the sender was not in the call. */
  left: boolean;
}
/** webrtc-*: the relay was routed to the target's socket. */
export interface RelayAck {
  ok: true;
}
export interface DeclineCallAck {
  ok: true;
  callId: string;
}
export interface CancelCallAck {
  ok: true;
  callId: string;
  /** The users whose invitations stopped ringing. */
  cancelled: string[];
}
export interface InviteToCallAck {
  ok: true;
  callId: string;
  /** The ids now ringing. */
  invited: string[];
  /** Those of them in another call. */
  busy: string[];
  /** Those offline (their invitations are missed at once). */
  unavailable: string[];
}
export interface CallMessageAck {
  ok: true;
  callId: string;
  id: string;
  sentAt: string;
}
export interface CallHistoryAck {
  ok: true;
  /** Newest first. */
  calls: CallRecord[];
  /** Pass as `before` for the next page; null on the last page. */
  next: string | null;
}

// ---- client -> server -----------------------------------------------------------------

export interface UserJoinedPayload {
  id: string;
  username: string;
  /** null on a first registration (the client speaks resume: relays carry `seq`). */
  resumeToken?: string | null;
  /** The seq of the last relay received, when resuming. */
  lastSeq?: number;
}
export interface StartCallPayload {
  id: string;
  initiator: { id: string; username?: string };
  participants: Array<{ id: string; username?: string }>;
  isVideo: boolean;
}
export interface JoinCallPayload {
  callId: string;
  user: { id: string; username?: string };
}
export interface LeaveCallPayload {
  callId: string;
  userId: string;
}
export interface WebRtcOfferPayload {
  callId: string;
  targetUserId: string;
  offer: RelayBody;
}
export interface WebRtcAnswerPayload {
  callId: string;
  targetUserId: string;
  answer: RelayBody;
}
export interface WebRtcIceCandidatePayload {
  callId: string;
  targetUserId: string;
  candidate: RelayBody;
}
export interface DeclineCallPayload {
  callId: string;
}
export interface CancelCallPayload {
  callId: string;
}
export interface InviteToCallPayload {
  callId: string;
  /** 1 to 64 user ids. */
  userIds: string[];
}
export interface CallMessagePayload {
  callId: string;
  /** 1 to 4,000 code points. */
  text: string;
}
export interface GetCallHistoryPayload {
  /** 1 to 100, default 20. */
  limit?: number;
  /** The `next` of a previous page. */
  before?: string;
}

/** Every client -> server event: its payload and its successful ack. */
export interface ClientRequests {
  'user-joined': { payload: UserJoinedPayload; ack: UserJoinedAck };
  'start-call': { payload: StartCallPayload; ack: StartCallAck };
  'join-call': { payload: JoinCallPayload; ack: JoinCallAck };
  'leave-call': { payload: LeaveCallPayload; ack: LeaveCallAck };
  'webrtc-offer': { payload: WebRtcOfferPayload; ack: RelayAck };
  'webrtc-answer': { payload: WebRtcAnswerPayload; ack: RelayAck };
  'webrtc-ice-candidate': { payload: WebRtcIceCandidatePayload; ack: RelayAck };
  'decline-call': { payload: DeclineCallPayload; ack: DeclineCallAck };
  'cancel-call': { payload: CancelCallPayload; ack: CancelCallAck };
  'invite-to-call': { payload: InviteToCallPayload; ack: InviteToCallAck };
  'call-message': { payload: CallMessagePayload; ack: CallMessageAck };
  'get-call-history': { payload: GetCallHistoryPayload; ack: CallHistoryAck };
}

// ---- server -> client -----------------------------------------------------------------

export interface CallIdPayload {
  callId: string;
}
export interface IncomingCall {
  callId: string;
  /** Who rang: the caller, or the participant who sent invite-to-call. */
  initiator: UserRef;
  isVideo: boolean;
}
export interface UserJoinedCall {
  callId: string;
  user: UserRef;
  /** Everyone in the call, the joiner included, in the order they joined. */
  participants: UserRef[];
}
export interface CallParticipants {
  callId: string;
  participants: UserRef[];
}
export interface UserLeftCall {
  callId: string;
  userId: string;
  participants: UserRef[];
}
/** Common to the relays a client receives. */
export interface RelayReceived {
  /** 1, 2, 3, ... per session, continued across a resume (clients that speak resume only). */
  seq?: number;
  callId: string;
  /** The sender's registered user id. */
  fromUserId: string;
}
export interface WebRtcOffer extends RelayReceived {
  offer: Json;
}
export interface WebRtcAnswer extends RelayReceived {
  answer: Json;
}
export interface WebRtcIceCandidate extends RelayReceived {
  candidate: Json;
}
export interface IceServers {
  iceServers: IceServer[];
  /** Seconds the TURN credentials stay valid. */
  ttl: number;
}
export interface MissedCalls {
  /** All calls missed since the user last saw them. */
  count: number;
  /** The newest 20 of them. */
  calls: CallRecord[];
}
/** user-reconnecting / user-reconnected: a peer's session went away / came back. */
export interface PeerInCall {
  callId: string;
  userId: string;
}
export type InviteEndReason = 'declined' | 'cancelled' | 'missed' | 'answered-elsewhere';
export interface InviteEnded {
  callId: string;
  reason: InviteEndReason;
}
/** call-declined, call-unanswered, user-busy, user-unavailable: what became of one invitee. */
export interface InviteeOutcome {
  callId: string;
  userId: string;
}
export interface ChatMessage {
  callId: string;
  /** Unique. */
  id: string;
  from: ChatSender;
  text: string;
  /** ISO 8601 UTC. */
  sentAt: string;
}
export interface CallMessages {
  callId: string;
  /** Oldest first; empty when there are none. */
  messages: ChatMessage[];
}

/** Every server -> client event and its payload. */
export interface ServerEvents {
  /** Everyone online (me included). With presence deltas: once per registration. */
  'users-list': PublicUser[];
  /** A user came online, or (deltas) its record changed: insert or replace by id. */
  'user-joined': PublicUser;
  /** The user id whose last socket went. */
  'user-left': string;
  'incoming-call': IncomingCall;
  'call-started': CallIdPayload;
  'call-not-found': CallIdPayload;
  'user-joined-call': UserJoinedCall;
  'call-participants': CallParticipants;
  'user-left-call': UserLeftCall;
  /** My leave-call was handled, or the gRPC API removed me from the call. */
  'call-left': CallIdPayload;
  'webrtc-offer': WebRtcOffer;
  'webrtc-answer': WebRtcAnswer;
  'webrtc-ice-candidate': WebRtcIceCandidate;
  'ice-servers': IceServers;
  'missed-calls': MissedCalls;
  /** The call was ended through the gRPC API. */
  'call-ended': CallIdPayload;
  'user-reconnecting': PeerInCall;
  'user-reconnected': PeerInCall;
  /** Calling extension (sockets with `calling: true`): my invitation stopped ringing. */
  'invite-ended': InviteEnded;
  'call-declined': InviteeOutcome;
  'call-unanswered': InviteeOutcome;
  'user-busy': InviteeOutcome;
  'user-unavailable': InviteeOutcome;
  'call-message': ChatMessage;
  'call-messages': CallMessages;
}

/** Application events pushed by internal services (`SendToUser`), payload as they gave it. */
export type AppEventName = `app:${string}`;

/** `[event, payload]` of any server event, for onAny handlers. */
export type AnyServerEvent = { [E in keyof ServerEvents]: [event: E, payload: ServerEvents[E]] }[keyof ServerEvents] | [event: AppEventName, payload: unknown];

// ---- the client ------------------------------------------------------------------------

/** The `registered` event: a user-joined ack, also after each reconnection. */
export interface Registration extends UserJoinedAck {
  resumed: boolean;
  recovered: boolean;
  /** A registration on a new socket after a lost connection (resumed or afresh). */
  reconnected: boolean;
}

/** Events of the client itself. */
export interface LocalEvents {
  connect: void;
  /** socket.io-client's reason ("io client disconnect", "transport close", ...). */
  disconnect: Socket.DisconnectReason;
  connect_error: Error;
  /** A registration was acknowledged: the first, each resume, each registration afresh. */
  registered: Registration;
  /** My resume token was refused (my session is gone, its calls too): registering afresh. */
  'resume-refused': MeetUpError;
  /** A re-registration after a lost connection failed (say `unavailable`); retried. */
  'registration-failed': MeetUpError;
  /** `users` changed. */
  'users-changed': ReadonlyMap<string, PublicUser>;
}

export type ClientEvents = ServerEvents & LocalEvents;

export interface MeetUpClientOptions {
  /** socket.io-client's `io`; default `globalThis.io` (meetup.js) or the imported one (index.js). */
  io?: typeof socketIo;
  /** `"delta"`: one users-list per registration, then user-joined / user-left only. */
  presence?: 'full' | 'delta';
  /** A JWT, when the gateway requires authentication. */
  token?: string;
  /** Receive the calling extension's events (default true). */
  calling?: boolean;
  /** How long a request waits for its ack (default DEFAULT_ACK_TIMEOUT_MS). */
  ackTimeoutMs?: number;
  /** Reconnect when the server closed the socket (a gateway stopping); default true. */
  reconnectOnServerClose?: boolean;
  /** Passed to `io()`; `auth` is merged with the client's own keys. */
  socketOptions?: Partial<ManagerOptions & SocketOptions>;
}

export declare const DEFAULT_ACK_TIMEOUT_MS: number;

export declare class MeetUpError extends Error {
  constructor(code: ErrorCode, message: string, event?: string | null);
  readonly name: 'MeetUpError';
  readonly code: ErrorCode;
  /** The event whose request failed. */
  readonly event: string | null;
}

export type Participant = string | { id: string; username?: string };

export declare class MeetUpClient {
  /** `url` undefined or null: the page's own origin. */
  constructor(url?: string | null, options?: MeetUpClientOptions);

  readonly socket: Socket;
  ackTimeoutMs: number;
  reconnectOnServerClose: boolean;
  /** The online users by id, me included. */
  readonly users: Map<string, PublicUser>;
  /** My public record from the last user-joined ack. */
  readonly user: PublicUser | null;
  readonly userId: string | null;
  /** The user-joined of the current socket was acknowledged. */
  readonly registered: boolean;
  /** Connected and registered. */
  readonly ready: boolean;
  /** I was registered and lost my connection (down, or up and resuming). */
  readonly reconnecting: boolean;
  readonly resumeToken: string | null;
  readonly lastSeq: number;
  readonly iceServers: IceServer[];

  on<E extends keyof ClientEvents>(event: E, handler: (payload: ClientEvents[E]) => void): () => void;
  on(event: AppEventName, handler: (payload: unknown) => void): () => void;
  once<E extends keyof ClientEvents>(event: E, handler: (payload: ClientEvents[E]) => void): () => void;
  once(event: AppEventName, handler: (payload: unknown) => void): () => void;
  off<E extends keyof ClientEvents>(event: E, handler: (payload: ClientEvents[E]) => void): this;
  off(event: AppEventName, handler: (payload: unknown) => void): this;
  /** Every server event, in arrival order, before its own handlers. */
  onAny(handler: (...event: AnyServerEvent) => void): () => void;

  /** user-joined, and again on every new socket (resume). */
  register(user: { id: string; username: string }): Promise<UserJoinedAck>;
  /** Goodbye: the server ends my session at once. */
  disconnect(): this;
  /** A new socket after disconnect(): registered afresh as the same user. */
  connect(): this;

  /** Any client -> server event with its ack; waits while a registration is under way. */
  request<E extends keyof ClientRequests>(event: E, payload: ClientRequests[E]['payload']): Promise<ClientRequests[E]['ack']>;

  /** `id` defaults to a new unique call id. */
  startCall(call: { participants: Participant[]; isVideo?: boolean; id?: string }): Promise<StartCallAck>;
  joinCall(callId: string): Promise<JoinCallAck>;
  leaveCall(callId: string): Promise<LeaveCallAck>;
  declineCall(callId: string): Promise<DeclineCallAck>;
  cancelCall(callId: string): Promise<CancelCallAck>;
  inviteToCall(callId: string, userIds: string[]): Promise<InviteToCallAck>;
  sendMessage(callId: string, text: string): Promise<CallMessageAck>;
  sendOffer(callId: string, targetUserId: string, offer: RelayBody): Promise<RelayAck>;
  sendAnswer(callId: string, targetUserId: string, answer: RelayBody): Promise<RelayAck>;
  sendIceCandidate(callId: string, targetUserId: string, candidate: RelayBody): Promise<RelayAck>;
  callHistory(page?: { limit?: number; before?: string | null }): Promise<CallHistoryAck>;
}

export declare function connect(url?: string | null, options?: MeetUpClientOptions): MeetUpClient;
