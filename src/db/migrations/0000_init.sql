CREATE SCHEMA "core_schema";
--> statement-breakpoint
CREATE SCHEMA "job_queue";
--> statement-breakpoint
CREATE SEQUENCE "job_queue"."caption_jobs_queue_position_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1;--> statement-breakpoint
CREATE TABLE "job_queue"."caption_jobs" (
	"job_id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"type" text NOT NULL,
	"status" text DEFAULT 'pending' NOT NULL,
	"priority" integer DEFAULT 100 NOT NULL,
	"queue_position" bigint DEFAULT nextval('job_queue.caption_jobs_queue_position_seq') NOT NULL,
	"perspectives" text[] NOT NULL,
	"dataset_id" uuid,
	"config" jsonb NOT NULL,
	"user_id" text,
	"idempotency_key" text,
	"total_images" integer DEFAULT 0 NOT NULL,
	"processed_images" integer DEFAULT 0 NOT NULL,
	"failed_images" integer DEFAULT 0 NOT NULL,
	"cancelled_images" integer DEFAULT 0 NOT NULL,
	"progress" double precision DEFAULT 0 NOT NULL,
	"error" text,
	"request_id" text,
	"archived" boolean DEFAULT false NOT NULL,
	"archive_date" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	"started_at" timestamp with time zone,
	"completed_at" timestamp with time zone,
	CONSTRAINT "caption_jobs_status_check" CHECK (status in ('pending', 'running', 'completed', 'partial', 'failed', 'cancelled')),
	CONSTRAINT "caption_jobs_type_check" CHECK (type in ('MULTI_PERSPECTIVE', 'DATASET_PERSPECTIVE', 'BACKFILL', 'DEPENDENCY_CHAIN')),
	CONSTRAINT "caption_jobs_counters_check" CHECK (processed_images >= 0 and failed_images >= 0 and cancelled_images >= 0 and total_images >= 0),
	CONSTRAINT "caption_jobs_progress_check" CHECK (progress >= 0 and progress <= 100)
);
--> statement-breakpoint
CREATE TABLE "core_schema"."captions" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"image_id" uuid NOT NULL,
	"perspective_id" uuid NOT NULL,
	"perspective_version" text NOT NULL,
	"model" text,
	"provider" text,
	"result" jsonb NOT NULL,
	"raw_text" text,
	"job_id" uuid,
	"item_id" uuid,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "core_schema"."dataset_images" (
	"dataset_id" uuid NOT NULL,
	"image_id" uuid NOT NULL,
	"added_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "dataset_images_dataset_id_image_id_pk" PRIMARY KEY("dataset_id","image_id")
);
--> statement-breakpoint
CREATE TABLE "core_schema"."datasets" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"name" text NOT NULL,
	"description" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "core_schema"."images" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"path" text NOT NULL,
	"format" text,
	"size_bytes" bigint,
	"width" integer,
	"height" integer,
	"content_hash" text,
	"file_mtime" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "job_queue"."job_archives" (
	"id" uuid PRIMARY KEY NOT NULL,
	"seq" bigint NOT NULL,
	"job_id" uuid NOT NULL,
	"image_id" uuid NOT NULL,
	"image_path" text NOT NULL,
	"perspective" text NOT NULL,
	"status" text NOT NULL,
	"attempts" integer NOT NULL,
	"next_attempt_at" timestamp with time zone,
	"lease_owner" text,
	"lease_expires_at" timestamp with time zone,
	"error" text,
	"processing_time" integer,
	"created_at" timestamp with time zone NOT NULL,
	"updated_at" timestamp with time zone NOT NULL,
	"started_at" timestamp with time zone,
	"completed_at" timestamp with time zone,
	"archived_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "job_archives_status_check" CHECK (status in ('pending', 'running', 'completed', 'failed', 'cancelled'))
);
--> statement-breakpoint
CREATE TABLE "job_queue"."job_dependencies" (
	"job_id" uuid NOT NULL,
	"depends_on_job_id" uuid NOT NULL,
	CONSTRAINT "job_dependencies_job_id_depends_on_job_id_pk" PRIMARY KEY("job_id","depends_on_job_id"),
	CONSTRAINT "job_dependencies_not_self_check" CHECK (job_id <> depends_on_job_id)
);
--> statement-breakpoint
CREATE TABLE "job_queue"."job_items" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"seq" bigint GENERATED ALWAYS AS IDENTITY (sequence name "job_queue"."job_items_seq_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"job_id" uuid NOT NULL,
	"image_id" uuid NOT NULL,
	"image_path" text NOT NULL,
	"perspective" text NOT NULL,
	"status" text DEFAULT 'pending' NOT NULL,
	"attempts" integer DEFAULT 0 NOT NULL,
	"next_attempt_at" timestamp with time zone,
	"lease_owner" text,
	"lease_expires_at" timestamp with time zone,
	"error" text,
	"processing_time" integer,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	"started_at" timestamp with time zone,
	"completed_at" timestamp with time zone,
	CONSTRAINT "job_items_status_check" CHECK (status in ('pending', 'running', 'completed', 'failed', 'cancelled')),
	CONSTRAINT "job_items_attempts_check" CHECK (attempts >= 0)
);
--> statement-breakpoint
CREATE TABLE "core_schema"."perspectives" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"name" text NOT NULL,
	"display_name" text NOT NULL,
	"version" text NOT NULL,
	"module" text NOT NULL,
	"description" text,
	"prompt" text NOT NULL,
	"schema_fields" jsonb DEFAULT '[]'::jsonb NOT NULL,
	"tags" text[] DEFAULT '{}'::text[] NOT NULL,
	"priority" integer DEFAULT 50 NOT NULL,
	"deprecated" boolean DEFAULT false NOT NULL,
	"replacement" text,
	"enabled" boolean DEFAULT true NOT NULL,
	"definition" jsonb NOT NULL,
	"definition_hash" text NOT NULL,
	"source_path" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "job_queue"."caption_jobs" ADD CONSTRAINT "caption_jobs_dataset_id_datasets_id_fk" FOREIGN KEY ("dataset_id") REFERENCES "core_schema"."datasets"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "core_schema"."captions" ADD CONSTRAINT "captions_image_id_images_id_fk" FOREIGN KEY ("image_id") REFERENCES "core_schema"."images"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "core_schema"."captions" ADD CONSTRAINT "captions_perspective_id_perspectives_id_fk" FOREIGN KEY ("perspective_id") REFERENCES "core_schema"."perspectives"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "core_schema"."captions" ADD CONSTRAINT "captions_job_id_caption_jobs_job_id_fk" FOREIGN KEY ("job_id") REFERENCES "job_queue"."caption_jobs"("job_id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "core_schema"."dataset_images" ADD CONSTRAINT "dataset_images_dataset_id_datasets_id_fk" FOREIGN KEY ("dataset_id") REFERENCES "core_schema"."datasets"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "core_schema"."dataset_images" ADD CONSTRAINT "dataset_images_image_id_images_id_fk" FOREIGN KEY ("image_id") REFERENCES "core_schema"."images"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "job_queue"."job_archives" ADD CONSTRAINT "job_archives_job_id_caption_jobs_job_id_fk" FOREIGN KEY ("job_id") REFERENCES "job_queue"."caption_jobs"("job_id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "job_queue"."job_archives" ADD CONSTRAINT "job_archives_image_id_images_id_fk" FOREIGN KEY ("image_id") REFERENCES "core_schema"."images"("id") ON DELETE restrict ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "job_queue"."job_dependencies" ADD CONSTRAINT "job_dependencies_job_id_caption_jobs_job_id_fk" FOREIGN KEY ("job_id") REFERENCES "job_queue"."caption_jobs"("job_id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "job_queue"."job_dependencies" ADD CONSTRAINT "job_dependencies_depends_on_job_id_caption_jobs_job_id_fk" FOREIGN KEY ("depends_on_job_id") REFERENCES "job_queue"."caption_jobs"("job_id") ON DELETE restrict ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "job_queue"."job_items" ADD CONSTRAINT "job_items_job_id_caption_jobs_job_id_fk" FOREIGN KEY ("job_id") REFERENCES "job_queue"."caption_jobs"("job_id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "job_queue"."job_items" ADD CONSTRAINT "job_items_image_id_images_id_fk" FOREIGN KEY ("image_id") REFERENCES "core_schema"."images"("id") ON DELETE restrict ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "caption_jobs_idempotency_key_key" ON "job_queue"."caption_jobs" USING btree ("idempotency_key");--> statement-breakpoint
CREATE INDEX "caption_jobs_queue_idx" ON "job_queue"."caption_jobs" USING btree ("priority","queue_position","created_at") WHERE status in ('pending', 'running') and not archived;--> statement-breakpoint
CREATE INDEX "caption_jobs_status_idx" ON "job_queue"."caption_jobs" USING btree ("status","archived");--> statement-breakpoint
CREATE INDEX "caption_jobs_created_idx" ON "job_queue"."caption_jobs" USING btree ("created_at");--> statement-breakpoint
CREATE INDEX "caption_jobs_user_idx" ON "job_queue"."caption_jobs" USING btree ("user_id");--> statement-breakpoint
CREATE UNIQUE INDEX "captions_item_id_key" ON "core_schema"."captions" USING btree ("item_id");--> statement-breakpoint
CREATE INDEX "captions_image_perspective_created_idx" ON "core_schema"."captions" USING btree ("image_id","perspective_id","created_at" DESC NULLS LAST);--> statement-breakpoint
CREATE INDEX "captions_perspective_idx" ON "core_schema"."captions" USING btree ("perspective_id");--> statement-breakpoint
CREATE INDEX "captions_job_idx" ON "core_schema"."captions" USING btree ("job_id");--> statement-breakpoint
CREATE INDEX "dataset_images_image_idx" ON "core_schema"."dataset_images" USING btree ("image_id");--> statement-breakpoint
CREATE UNIQUE INDEX "datasets_name_key" ON "core_schema"."datasets" USING btree ("name");--> statement-breakpoint
CREATE UNIQUE INDEX "images_path_key" ON "core_schema"."images" USING btree ("path");--> statement-breakpoint
CREATE INDEX "job_archives_job_idx" ON "job_queue"."job_archives" USING btree ("job_id","seq");--> statement-breakpoint
CREATE INDEX "job_dependencies_depends_on_idx" ON "job_queue"."job_dependencies" USING btree ("depends_on_job_id");--> statement-breakpoint
CREATE INDEX "job_items_job_status_idx" ON "job_queue"."job_items" USING btree ("job_id","status","seq");--> statement-breakpoint
CREATE INDEX "job_items_claim_idx" ON "job_queue"."job_items" USING btree ("job_id","seq") WHERE status = 'pending';--> statement-breakpoint
CREATE INDEX "job_items_lease_idx" ON "job_queue"."job_items" USING btree ("lease_expires_at") WHERE status = 'running';--> statement-breakpoint
CREATE INDEX "job_items_completed_idx" ON "job_queue"."job_items" USING btree ("completed_at") WHERE completed_at is not null;--> statement-breakpoint
CREATE INDEX "job_items_image_idx" ON "job_queue"."job_items" USING btree ("image_id");--> statement-breakpoint
CREATE UNIQUE INDEX "perspectives_name_key" ON "core_schema"."perspectives" USING btree ("name");--> statement-breakpoint
CREATE INDEX "perspectives_module_idx" ON "core_schema"."perspectives" USING btree ("module");