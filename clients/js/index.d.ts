// Types of the Node and bundler entry (index.js): the same API as meetup.js, `io` built in.
export * from './meetup.js';
