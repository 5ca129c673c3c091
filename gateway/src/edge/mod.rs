//! The HTTP edge: plain HTTP endpoints and CORS (`http`), abuse limits
//! (`limits`), browser authentication (`auth`) and ICE/TURN credentials (`turn`).

pub mod auth;
pub mod forwarded;
pub mod http;
pub mod limits;
pub mod turn;
