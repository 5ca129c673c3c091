//! Generated gRPC and bus types of the MeetUp signaling system, and the encoded
//! descriptor set that the services serve through gRPC reflection.

pub mod presence {
    pub mod v1 {
        tonic::include_proto!("meetup.presence.v1");
    }
}

pub mod calls {
    pub mod v1 {
        tonic::include_proto!("meetup.calls.v1");
    }
}

pub mod history {
    pub mod v1 {
        tonic::include_proto!("meetup.history.v1");
    }
}

pub mod bus {
    pub mod v1 {
        tonic::include_proto!("meetup.bus.v1");
    }
}

/// The encoded `FileDescriptorSet` of every MeetUp proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("meetup_descriptor");
