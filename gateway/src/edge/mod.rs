//! The HTTP edge: plain HTTP endpoints and CORS (`http`), abuse limits
//! (`limits`), browser authentication (`auth`), ICE/TURN credentials (`turn`)
//! and the HTTP/1.1 server itself (`serve`).

pub mod auth;
pub mod forwarded;
pub mod http;
pub mod limits;
pub mod origin;
pub mod serve;
pub mod turn;
