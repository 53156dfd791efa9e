ALTER TABLE "job_queue"."caption_jobs" ADD COLUMN "rate_window_started_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "job_queue"."caption_jobs" ADD COLUMN "rate_window_items" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "job_queue"."caption_jobs" ADD COLUMN "recent_items_per_second" double precision;