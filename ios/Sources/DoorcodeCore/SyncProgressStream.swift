import Foundation

extension Handset {
    /// One sync of `date` (`YYYY-MM-DD`, default today) as an `AsyncStream`
    /// of its steps, for a progress view: `.started`, `.manifestPulled`, then
    /// `.uploading(done:total:)` before the first batch and after each, and
    /// last `.done(report:)` or `.failed(error:)`; then the stream finishes.
    /// It never throws: a failure is the `.failed` step. Each call runs one
    /// sync; cancelling the consuming task (or dropping the stream) cancels
    /// the sync, and whatever was recorded or acknowledged stays.
    public func syncProgress(date: String? = nil) -> AsyncStream<SyncProgress> {
        AsyncStream(bufferingPolicy: .unbounded) { continuation in
            let listener = StreamListener(continuation)
            let task = Task {
                // A failure was already yielded as `.failed`.
                _ = try? await self.syncWithProgress(date: date, listener: listener)
                continuation.finish()
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }
}

/// Hands each step to the stream. Called on the core's thread; `yield` never
/// blocks (the buffer is unbounded: a sync has a few dozen steps).
final class StreamListener: SyncListener {
    private let continuation: AsyncStream<SyncProgress>.Continuation

    init(_ continuation: AsyncStream<SyncProgress>.Continuation) {
        self.continuation = continuation
    }

    func onProgress(progress: SyncProgress) throws {
        continuation.yield(progress)
    }
}
