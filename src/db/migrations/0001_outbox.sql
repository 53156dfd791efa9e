CREATE SEQUENCE "job_queue"."outbox_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1;--> statement-breakpoint
CREATE TABLE "job_queue"."outbox" (
	"id" bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "job_queue"."outbox_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"seq" bigint DEFAULT nextval('job_queue.outbox_seq') NOT NULL,
	"event_id" uuid DEFAULT gen_random_uuid() NOT NULL,
	"type" text NOT NULL,
	"stream" text NOT NULL,
	"job_id" uuid,
	"data" jsonb NOT NULL,
	"request_id" text,
	"occurred_at" timestamp with time zone DEFAULT now() NOT NULL,
	"delivered_at" timestamp with time zone,
	"attempts" integer DEFAULT 0 NOT NULL,
	"next_attempt_at" timestamp with time zone,
	"last_error" text,
	"lease_owner" text,
	"lease_expires_at" timestamp with time zone,
	"xid" "xid8" DEFAULT pg_current_xact_id() NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX "outbox_seq_key" ON "job_queue"."outbox" USING btree ("seq");--> statement-breakpoint
CREATE INDEX "outbox_xid_idx" ON "job_queue"."outbox" USING btree ("xid");--> statement-breakpoint
CREATE INDEX "outbox_undelivered_idx" ON "job_queue"."outbox" USING btree ("stream","seq") WHERE delivered_at is null;--> statement-breakpoint
CREATE INDEX "outbox_delivered_idx" ON "job_queue"."outbox" USING btree ("delivered_at") WHERE delivered_at is not null;--> statement-breakpoint
CREATE UNIQUE INDEX "outbox_pending_progress_key" ON "job_queue"."outbox" USING btree ("job_id") WHERE type = 'JOB_PROGRESS' and delivered_at is null;--> statement-breakpoint
CREATE INDEX "outbox_job_seq_idx" ON "job_queue"."outbox" USING btree ("job_id","seq");