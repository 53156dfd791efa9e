ALTER TABLE "job_queue"."caption_jobs" DROP CONSTRAINT "caption_jobs_status_check";--> statement-breakpoint
DROP INDEX "job_queue"."caption_jobs_queue_idx";--> statement-breakpoint
CREATE INDEX "caption_jobs_queue_idx" ON "job_queue"."caption_jobs" USING btree ("priority","queue_position","created_at") WHERE status in ('pending', 'running', 'paused') and not archived;--> statement-breakpoint
ALTER TABLE "job_queue"."caption_jobs" ADD CONSTRAINT "caption_jobs_status_check" CHECK (status in ('pending', 'running', 'paused', 'completed', 'partial', 'failed', 'cancelled'));