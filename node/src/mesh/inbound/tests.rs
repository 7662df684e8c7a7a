use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, future::join_all};
use tokio::time::timeout;

use super::*;
use crate::{
    mesh::metrics::ReasonLabel,
    test_utils::mesh::{eventually, stream_dialer_to},
};

const PROTOCOL: StreamProtocol = StreamProtocol::new("/quackmesh/test-inbound/1");
const LIMIT: Duration = Duration::from_secs(20);

fn rejected(metrics: &MeshMetrics, reason: &str) -> u64 {
    metrics
        .requests_rejected
        .get_or_create(&ReasonLabel {
            reason: reason.to_owned(),
        })
        .get()
}

/// A listener queueing up to `queue` inbound streams, and a dialer connected to it.
struct Pair {
    metrics: MeshMetrics,
    incoming: Incoming,
    listener: PeerId,
    dialer: PeerId,
    control: libp2p_stream::Control,
}

async fn pair(queue: usize) -> Pair {
    let metrics = MeshMetrics::default();
    let cfg = Config {
        protocol: PROTOCOL,
        queue,
    };
    let (behaviour, incoming) = Behaviour::new(cfg, metrics.clone());
    let (listener, dialer, control) = stream_dialer_to(behaviour).await;
    Pair {
        metrics,
        incoming,
        listener,
        dialer,
        control,
    }
}

/// Takes `n` queued streams and reads each to its end: who sent them, and their bytes in
/// the order taken.
async fn read_queued(incoming: &mut Incoming, n: usize) -> (Vec<PeerId>, Vec<u8>) {
    let (mut senders, mut bytes) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let (from, mut s) = timeout(LIMIT, incoming.recv())
            .await
            .expect("queued in time")
            .expect("a stream");
        senders.push(from);
        s.read_to_end(&mut bytes).await.expect("read");
    }
    (senders, bytes)
}

#[tokio::test]
async fn a_burst_of_streams_waits_for_a_consumer_that_is_not_ready() {
    let Pair {
        metrics,
        mut incoming,
        listener,
        dialer,
        control,
    } = pair(64).await;

    // 40 streams at once, each carrying its number, while nobody takes any.
    let opens = (0..40u8).map(|i| {
        let mut control = control.clone();
        async move {
            let mut s = control.open_stream(listener, PROTOCOL).await.expect("open");
            s.write_all(&[i]).await.expect("write");
            s.close().await.expect("close");
        }
    });
    timeout(LIMIT, join_all(opens))
        .await
        .expect("opened in time");

    let (senders, mut seen) = read_queued(&mut incoming, 40).await;
    assert!(senders.iter().all(|p| *p == dialer));
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..40).collect::<Vec<u8>>(),
        "every stream arrived intact"
    );
    assert_eq!(rejected(&metrics, "stream_queue_full"), 0);
}

#[tokio::test]
async fn streams_beyond_a_full_queue_are_dropped_and_counted() {
    let Pair {
        metrics,
        mut incoming,
        listener,
        mut control,
        ..
    } = pair(2).await;

    for i in 0..6u8 {
        // A dropped stream is reset: its writes may fail, which is the point.
        if let Ok(Ok(mut s)) = timeout(LIMIT, control.open_stream(listener, PROTOCOL)).await {
            let _ = s.write_all(&[i]).await;
            let _ = s.close().await;
        }
    }
    let all_counted = eventually(LIMIT, || async {
        (rejected(&metrics, "stream_queue_full") >= 4).then_some(())
    })
    .await;
    assert!(all_counted.is_some());
    assert_eq!(rejected(&metrics, "stream_queue_full"), 4);

    // The two queued ones are whole: the first two opened.
    let (_, seen) = read_queued(&mut incoming, 2).await;
    assert_eq!(seen, vec![0, 1]);
    assert!(incoming.try_recv().is_err(), "nothing else was queued");
}
