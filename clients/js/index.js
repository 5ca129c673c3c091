// Entry of @meetup/client for Node and bundlers: the client of meetup.js with socket.io-client's `io` built in.
import { io } from 'socket.io-client';
import { MeetUpClient as Client } from './meetup.js';

export { DEFAULT_ACK_TIMEOUT_MS, MeetUpError } from './meetup.js';

/** MeetUpClient of meetup.js whose `io` defaults to socket.io-client's. */
export class MeetUpClient extends Client {
  constructor(url, options = {}) {
    super(url, { io, ...options });
  }
}

/** A client for `url`; see MeetUpClient. */
export function connect(url, options) {
  return new MeetUpClient(url, options);
}
