//! The import's [`Store`] on containerd's own gRPC API (content, images, leases, snapshots
//! and diff services, generated at build time from containerd's `.proto` files): every call
//! names the CRI plugin's namespace, and every write the import's lease.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Status};

use cairn_api::oci::{Descriptor, Digest};

use super::{ImportError, Labels, Store};
use crate::services::containerd::SNAPSHOTTER;
use crate::workloads::channel;

/// The generated messages and clients, in containerd's package tree (they name each other
/// by relative paths).
#[allow(missing_docs, clippy::all)]
mod api {
    pub mod types {
        tonic::include_proto!("containerd.types");
    }
    pub mod services {
        pub mod content {
            pub mod v1 {
                tonic::include_proto!("containerd.services.content.v1");
            }
        }
        pub mod diff {
            pub mod v1 {
                tonic::include_proto!("containerd.services.diff.v1");
            }
        }
        pub mod images {
            pub mod v1 {
                tonic::include_proto!("containerd.services.images.v1");
            }
        }
        pub mod leases {
            pub mod v1 {
                tonic::include_proto!("containerd.services.leases.v1");
            }
        }
        pub mod snapshots {
            pub mod v1 {
                tonic::include_proto!("containerd.services.snapshots.v1");
            }
        }
    }
}

use api::services::content::v1::{self as content, content_client::ContentClient};
use api::services::diff::v1::{self as diff, diff_client::DiffClient};
use api::services::images::v1::{self as images, images_client::ImagesClient};
use api::services::leases::v1::{self as leases, leases_client::LeasesClient};
use api::services::snapshots::v1::{self as snapshots, snapshots_client::SnapshotsClient};

/// The CRI plugin's namespace: the images it runs pods from.
const NAMESPACE: &str = "k8s.io";
/// The gRPC header naming the namespace of a call.
const NAMESPACE_HEADER: &str = "containerd-namespace";
/// The gRPC header naming the lease that holds what a call creates.
const LEASE_HEADER: &str = "containerd-lease";
/// The lease label with its expiry: a lease left by a power cut goes by itself.
const LEASE_EXPIRY_LABEL: &str = "containerd.io/gc.expire";
/// How long a lease lives at most.
const LEASE_LIFETIME: Duration = Duration::from_secs(3600);
/// The size of the pieces a blob is written in (containerd takes messages up to 16 MiB).
const WRITE_CHUNK: usize = 1 << 20;
/// The longest unpacking one layer may take (a large one, on an SD card).
const APPLY_TIMEOUT: Duration = Duration::from_secs(600);

/// containerd's services over one connection, and the lease of this import once it writes.
pub struct Containerd {
    content: ContentClient<Channel>,
    images: ImagesClient<Channel>,
    leases: LeasesClient<Channel>,
    snapshots: SnapshotsClient<Channel>,
    diff: DiffClient<Channel>,
    lease: Option<String>,
}

/// A layer snapshot being unpacked: its key and where it is mounted from.
pub struct Prepared {
    key: String,
    mounts: Vec<api::types::Mount>,
}

impl Containerd {
    /// Connects to containerd on `socket`.
    pub async fn connect(socket: &str) -> Result<Containerd, ImportError> {
        let channel = channel::connect(socket)
            .await
            .map_err(|source| ImportError::Connect { socket: socket.into(), source })?;
        Ok(Containerd {
            content: ContentClient::new(channel.clone()),
            images: ImagesClient::new(channel.clone()),
            leases: LeasesClient::new(channel.clone()),
            snapshots: SnapshotsClient::new(channel.clone()),
            diff: DiffClient::new(channel),
            lease: None,
        })
    }

    /// `message` in the namespace, under the lease if there is one.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let metadata = request.metadata_mut();
        metadata.insert(NAMESPACE_HEADER, MetadataValue::from_static(NAMESPACE));
        if let Some(lease) = self.lease.as_deref().and_then(|l| l.parse().ok()) {
            metadata.insert(LEASE_HEADER, lease);
        }
        request
    }

    /// Takes a lease before the first write: what is written is held until an image
    /// references it.
    async fn hold_lease(&mut self) -> Result<(), ImportError> {
        if self.lease.is_some() {
            return Ok(());
        }
        let now = SystemTime::now();
        let since_epoch = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let id = format!("cairn-import-{}", since_epoch.as_nanos());
        let expiry = humantime::format_rfc3339_seconds(now + LEASE_LIFETIME).to_string();
        let labels = HashMap::from([(LEASE_EXPIRY_LABEL.to_string(), expiry)]);
        let request = self.request(leases::CreateRequest { id: id.clone(), labels });
        self.leases.create(request).await.map_err(failed(format!("creating lease {id}")))?;
        self.lease = Some(id);
        Ok(())
    }

    /// Ends the lease, if one was taken.
    pub async fn release(&mut self) -> Result<(), ImportError> {
        let Some(id) = self.lease.take() else { return Ok(()) };
        let call = format!("deleting lease {id}");
        let request = self.request(leases::DeleteRequest { id, sync: false });
        self.leases.delete(request).await.map_err(failed(call))?;
        Ok(())
    }

    /// Writes `data` as blob `digest` with `labels`: pieces, then a commit that checks the
    /// digest and size. A write a power cut interrupted starts over (offset 0 truncates it).
    async fn write(&mut self, digest: &Digest, data: &[u8], labels: &Labels) -> Result<(), Status> {
        let reference = format!("cairn-import-{digest}");
        let total = data.len() as i64;
        let message = |action: content::WriteAction, offset: usize, data: &[u8]| {
            content::WriteContentRequest {
                action: action as i32,
                r#ref: reference.clone(),
                total,
                expected: digest.to_string(),
                offset: offset as i64,
                data: data.to_vec(),
                labels: HashMap::new(),
            }
        };
        let mut messages: Vec<_> = data
            .chunks(WRITE_CHUNK)
            .enumerate()
            .map(|(i, chunk)| message(content::WriteAction::Write, i * WRITE_CHUNK, chunk))
            .collect();
        let mut commit = message(content::WriteAction::Commit, data.len(), &[]);
        commit.labels = labels.clone().into_iter().collect();
        messages.push(commit);
        let request = self.request(tokio_stream::iter(messages));
        let mut answers = self.content.write(request).await?.into_inner();
        while answers.message().await?.is_some() {}
        Ok(())
    }
}

/// Maps a failed call's status to an error naming the call.
fn failed(call: String) -> impl FnOnce(Status) -> ImportError {
    move |status| ImportError::Call { call, status }
}

/// `text` as a digest, or an error naming `call`.
fn digest(text: String, call: &str) -> Result<Digest, ImportError> {
    Digest::parse(&text).ok_or_else(|| ImportError::Answer { call: call.into(), value: text })
}

/// A descriptor as containerd's API has it.
fn descriptor(descriptor: &Descriptor) -> api::types::Descriptor {
    api::types::Descriptor {
        media_type: descriptor.media_type.clone(),
        digest: descriptor.digest.to_string(),
        size: descriptor.size as i64,
        annotations: descriptor.annotations.clone().into_iter().collect(),
    }
}

impl Store for Containerd {
    type Prepared = Prepared;

    async fn blob_labels(&mut self, digest: &Digest) -> Result<Option<Labels>, ImportError> {
        let request = self.request(content::InfoRequest { digest: digest.to_string() });
        match self.content.info(request).await {
            Ok(info) => {
                Ok(Some(info.into_inner().info.unwrap_or_default().labels.into_iter().collect()))
            }
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(failed(format!("reading blob {digest}"))(status)),
        }
    }

    async fn write_blob(
        &mut self,
        digest: &Digest,
        data: &[u8],
        labels: &Labels,
    ) -> Result<(), ImportError> {
        self.hold_lease().await?;
        match self.write(digest, data, labels).await {
            Ok(()) => Ok(()),
            // Written meanwhile (by a pull): it still needs the labels.
            Err(status) if status.code() == Code::AlreadyExists => {
                self.label_blob(digest, labels).await
            }
            Err(status) => Err(failed(format!("writing blob {digest}"))(status)),
        }
    }

    async fn label_blob(&mut self, digest: &Digest, labels: &Labels) -> Result<(), ImportError> {
        let paths = labels.keys().map(|key| format!("labels.{key}")).collect();
        let request = self.request(content::UpdateRequest {
            info: Some(content::Info {
                digest: digest.to_string(),
                labels: labels.clone().into_iter().collect(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask { paths }),
        });
        self.content.update(request).await.map_err(failed(format!("labelling blob {digest}")))?;
        Ok(())
    }

    async fn image_target(&mut self, name: &str) -> Result<Option<Digest>, ImportError> {
        let call = format!("reading image {name}");
        let request = self.request(images::GetImageRequest { name: name.into() });
        match self.images.get(request).await {
            Ok(got) => {
                let target = got.into_inner().image.and_then(|i| i.target).unwrap_or_default();
                digest(target.digest, &call).map(Some)
            }
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(failed(call)(status)),
        }
    }

    async fn put_image(&mut self, name: &str, target: &Descriptor) -> Result<(), ImportError> {
        let image = images::Image {
            name: name.into(),
            target: Some(descriptor(target)),
            ..Default::default()
        };
        let request = self.request(images::CreateImageRequest {
            image: Some(image.clone()),
            source_date_epoch: None,
        });
        match self.images.create(request).await {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::AlreadyExists => {
                // No mask: the record becomes `image` (an OS update brought a new archive).
                let request = self.request(images::UpdateImageRequest {
                    image: Some(image),
                    update_mask: None,
                    source_date_epoch: None,
                });
                self.images
                    .update(request)
                    .await
                    .map_err(failed(format!("updating image {name}")))?;
                Ok(())
            }
            Err(status) => Err(failed(format!("creating image {name}"))(status)),
        }
    }

    async fn snapshot_exists(&mut self, chain_id: &Digest) -> Result<bool, ImportError> {
        let request = self.request(snapshots::StatSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: chain_id.to_string(),
        });
        match self.snapshots.stat(request).await {
            Ok(_) => Ok(true),
            Err(status) if status.code() == Code::NotFound => Ok(false),
            Err(status) => Err(failed(format!("looking for snapshot {chain_id}"))(status)),
        }
    }

    async fn prepare(
        &mut self,
        parent: Option<&Digest>,
        chain_id: &Digest,
    ) -> Result<Prepared, ImportError> {
        self.hold_lease().await?;
        // containerd's unpacker names its active snapshots so: unique, and saying what for.
        let since_epoch =
            SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let key = format!("extract-{} {chain_id}", since_epoch.as_nanos());
        let request = self.request(snapshots::PrepareSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: key.clone(),
            parent: parent.map(ToString::to_string).unwrap_or_default(),
            labels: HashMap::new(),
        });
        let prepared = self
            .snapshots
            .prepare(request)
            .await
            .map_err(failed(format!("preparing snapshot {key}")))?;
        Ok(Prepared { key, mounts: prepared.into_inner().mounts })
    }

    async fn apply(
        &mut self,
        prepared: &Prepared,
        layer: &Descriptor,
    ) -> Result<Digest, ImportError> {
        let call = format!("unpacking layer {}", layer.digest);
        let mut request = self.request(diff::ApplyRequest {
            diff: Some(descriptor(layer)),
            mounts: prepared.mounts.clone(),
            payloads: HashMap::new(),
            // On flash before it is committed: a power cut must not leave a torn layer that
            // looks unpacked.
            sync_fs: true,
        });
        request.set_timeout(APPLY_TIMEOUT);
        let applied = self.diff.apply(request).await.map_err(failed(call.clone()))?;
        digest(applied.into_inner().applied.unwrap_or_default().digest, &call)
    }

    async fn commit(&mut self, prepared: Prepared, chain_id: &Digest) -> Result<(), ImportError> {
        let request = self.request(snapshots::CommitSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            name: chain_id.to_string(),
            key: prepared.key.clone(),
            labels: HashMap::new(),
        });
        match self.snapshots.commit(request).await {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::AlreadyExists => self.remove(prepared).await,
            Err(status) => Err(failed(format!("committing snapshot {chain_id}"))(status)),
        }
    }

    async fn remove(&mut self, prepared: Prepared) -> Result<(), ImportError> {
        let call = format!("removing snapshot {}", prepared.key);
        let request = self.request(snapshots::RemoveSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: prepared.key,
        });
        self.snapshots.remove(request).await.map_err(failed(call))?;
        Ok(())
    }
}
