CREATE TABLE "job_queue"."job_item_chunks" (
	"job_id" uuid NOT NULL,
	"first_item" integer NOT NULL,
	"image_ids" uuid[] NOT NULL,
	"image_paths" text[] NOT NULL,
	"perspectives" text[] NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "job_item_chunks_job_id_first_item_pk" PRIMARY KEY("job_id","first_item")
);
--> statement-breakpoint
ALTER TABLE "job_queue"."job_item_chunks" ADD CONSTRAINT "job_item_chunks_job_id_caption_jobs_job_id_fk" FOREIGN KEY ("job_id") REFERENCES "job_queue"."caption_jobs"("job_id") ON DELETE cascade ON UPDATE no action;